#[spanrec::trace(err)]
fn handler() -> u32 {
    1
}

fn main() {}
