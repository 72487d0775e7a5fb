//! Fault injection with the server's `failCommand` fail point
//! (`configureFailPoint`, available on servers started with test commands
//! enabled: every server [`LocalServer`](crate::LocalServer) starts).
//!
//! The fail point makes the named commands fail with a chosen error code,
//! a write-concern error, or a closed connection, a number of `times` or
//! until turned off. Reference: the MongoDB server's `failCommand`
//! documentation in the drivers' specifications repository
//! (`specifications/source/transactions/tests/README`).

use bson::{doc, Document};

/// An `alwaysOn` fail point, turned off when dropped (also when the test
/// panics), so that a failing test does not break the ones after it.
#[must_use = "the fail point is turned off when this guard is dropped"]
pub struct FailPoint {
    client: mongodb::sync::Client,
}

impl FailPoint {
    /// Makes the commands named in `data.failCommands` fail as `data` says
    /// until the guard is dropped (or [`off`](Self::off)).
    pub fn always_on(uri: &str, data: Document) -> Result<FailPoint, mongodb::error::Error> {
        let client = mongodb::sync::Client::with_uri_str(uri)?;
        configure(
            &client,
            doc! { "configureFailPoint": "failCommand", "mode": "alwaysOn", "data": data },
        )?;
        Ok(FailPoint { client })
    }

    /// Turns the fail point off now.
    pub fn off(self) {}
}

impl Drop for FailPoint {
    fn drop(&mut self) {
        let _ = configure(
            &self.client,
            doc! { "configureFailPoint": "failCommand", "mode": "off" },
        );
    }
}

/// Makes the commands named in `data.failCommands` fail as `data` says the
/// next `times` times they run; then the fail point turns itself off.
pub fn times(uri: &str, data: Document, times: i32) -> Result<(), mongodb::error::Error> {
    let client = mongodb::sync::Client::with_uri_str(uri)?;
    configure(
        &client,
        doc! { "configureFailPoint": "failCommand", "mode": { "times": times }, "data": data },
    )
}

fn configure(
    client: &mongodb::sync::Client,
    command: Document,
) -> Result<(), mongodb::error::Error> {
    client
        .database("admin")
        .run_command(command)
        .run()
        .map(|_| ())
}
