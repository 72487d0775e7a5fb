#[spanrec::trace(skip(password))]
fn login(user: &str, secret: &str) -> bool {
    user != secret
}

fn main() {}
