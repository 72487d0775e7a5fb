#[spanrec::trace(level = "info")]
fn handler() {}

fn main() {}
