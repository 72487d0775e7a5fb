struct Connection;

#[spanrec::trace]
fn query(conn: Connection, sql: &str) -> usize {
    let _ = conn;
    sql.len()
}

fn main() {}
