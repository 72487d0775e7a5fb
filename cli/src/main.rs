//! `spanrec`: read the audit log spanrec-mongo writes.
//!
//! ```text
//! spanrec trace <trace-id>                 the trace as a tree with a waterfall
//! spanrec find [--since 15m] [--operation N] [--tag k=v] [--status error] [--limit 50] [--skip 0]
//! spanrec tail [--operation N] [--interval-ms 1000] [--max N]
//! spanrec stats [--since 1h]               counts and latency percentiles per operation
//! spanrec export [<trace-id>] --format otlp-json|jaeger-json|chrome-trace [-o FILE] [find filters]
//! spanrec verify [--checkpoint F] [--head [CHAIN:]SEQ:HASH] [--key-file F]
//!                                          check the hash chain: unaltered and complete
//! ```
//!
//! Every command takes `--json` (one JSON document on stdout; `tail` prints
//! one per line) and `--uri` or `--uri-file` (default `$SPANREC_MONGO_URI`, else
//! `mongodb://127.0.0.1:27017`), `--database`, `--collection`.
//! Exit status: 0 ok, 1 nothing found (`verify`: the log is not intact, or
//! holds no chain records), 2 bad input or unreachable database.

mod export;
mod input_file;
mod model;
mod render;
mod time;
mod verify;

use bson::{doc, Bson, Document};
use clap::{Args, Parser, Subcommand};
use model::SpanDoc;
use mongodb::options::ClientOptions;
use mongodb::sync::{Client, Collection};
use spanrec::hex::{decode_u128, Digits};
use spanrec_mongo::RedactedUri;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "spanrec",
    version,
    about = "Read spanrec's audit log in MongoDB"
)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct DbArgs {
    /// MongoDB connection string. One with credentials is better given
    /// through $SPANREC_MONGO_URI or --uri-file: an argument is visible to
    /// other users in the process list and stays in the shell's history.
    /// Secrets are masked in every message.
    #[arg(
        long,
        global = true,
        env = "SPANREC_MONGO_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    uri: String,
    /// Read the connection string from this file (its first line) instead
    /// of --uri or $SPANREC_MONGO_URI.
    #[arg(long, global = true, value_name = "PATH")]
    uri_file: Option<std::path::PathBuf>,
    /// Database the recorder writes to.
    #[arg(long, global = true, default_value = "spanrec")]
    database: String,
    /// Collection the recorder writes to.
    #[arg(long, global = true, default_value = "spans")]
    collection: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show one trace as a tree with a time-proportional waterfall.
    Trace {
        /// The trace id: 32 hex digits (16 for a 64-bit OpenTracing id).
        trace_id: String,
    },
    /// Search spans, newest first.
    Find(FindArgs),
    /// Follow new spans as they are written.
    Tail {
        #[command(flatten)]
        filter: Filter,
        /// Poll interval (10 ms to 1 h).
        #[arg(long, default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval_ms: u64,
        /// Stop after this many spans (for scripts and tests).
        #[arg(long)]
        max: Option<usize>,
    },
    /// Counts and latency percentiles per operation over a window.
    Stats {
        /// Window start (`1h` ago by default).
        #[arg(long, default_value = "1h")]
        since: String,
        /// Window end (now by default).
        #[arg(long)]
        until: Option<String>,
    },
    /// Write spans in a format viewers open: OTLP JSON (collectors,
    /// Jaeger), Jaeger JSON (Jaeger UI upload), Chrome trace events
    /// (Perfetto, chrome://tracing).
    Export(ExportArgs),
    /// Check the tamper-evident chain: every record's hash, MAC and link,
    /// every batch's Merkle root, checkpoints; report gaps and violations.
    /// Exit 0 only for an intact log; 1 for one with no chain records
    /// (an empty log and a wiped one look the same: --checkpoint or --head
    /// tell them apart).
    Verify(verify::VerifyArgs),
}

#[derive(Args, Debug)]
struct Filter {
    /// Only this operation name.
    #[arg(long)]
    operation: Option<String>,
    /// Only spans with this tag value (`key=value`; repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Only failed (`error`) or successful (`ok`) spans (tag `error=true`).
    #[arg(long, value_parser = ["ok", "error"])]
    status: Option<String>,
}

#[derive(Args, Debug)]
struct FindArgs {
    #[command(flatten)]
    filter: Filter,
    /// Spans that started at or after this time (`15m`, `2h`, RFC 3339 UTC).
    #[arg(long)]
    since: Option<String>,
    /// Spans that started before this time.
    #[arg(long)]
    until: Option<String>,
    /// Page size (at least 1).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Spans to skip (for the next page: the previous skip + limit).
    #[arg(long, default_value_t = 0)]
    skip: u64,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// One trace (32 hex digits); without it, the spans the filters find.
    trace_id: Option<String>,
    /// Output format.
    #[arg(long, value_enum)]
    format: export::ExportFormat,
    /// Write here instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    output: Option<std::path::PathBuf>,
    #[command(flatten)]
    find: FindArgs,
}

/// What went wrong, for the user.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Input(String),
    #[error("cannot reach MongoDB at {uri}: {message}")]
    Unreachable { uri: RedactedUri, message: String },
    #[error("query failed: {0}")]
    Query(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the log is not intact: {0} violations")]
    NotIntact(usize),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::NotFound(_) | CliError::NotIntact(_) => ExitCode::from(1),
            _ => ExitCode::from(2),
        }
    }
}

/// The connection string: `--uri-file`'s first line, else `--uri` (or
/// `$SPANREC_MONGO_URI`).
fn connection_string(db: &DbArgs) -> Result<String, CliError> {
    match &db.uri_file {
        None => Ok(db.uri.clone()),
        Some(path) => input_file::lines(path, 1)
            .map(|lines| lines.first().map_or("", |l| l.trim()).to_string())
            .map_err(|e| {
                CliError::Input(format!("cannot read --uri-file {}: {e}", path.display()))
            }),
    }
}

fn connect(db: &DbArgs) -> Result<Collection<Document>, CliError> {
    Ok(connect_database(db)?.collection(&db.collection))
}

fn connect_database(db: &DbArgs) -> Result<mongodb::sync::Database, CliError> {
    // A name MongoDB refuses is the caller's error, said before connecting
    // (a stand-in server may accept it and answer "no spans").
    spanrec_mongo::check_names(&db.database, &db.collection)
        .map_err(|e| CliError::Input(e.to_string()))?;
    let uri_text = connection_string(db)?;
    let uri = RedactedUri::new(&uri_text);
    let unreachable = |e: mongodb::error::Error| CliError::Unreachable {
        uri: uri.clone(),
        message: uri.scrub(&e.to_string()),
    };
    let mut options = ClientOptions::parse(uri.expose()).run().map_err(|e| {
        CliError::Input(format!(
            "bad connection string {uri}: {}",
            uri.scrub(&e.to_string())
        ))
    })?;
    // A reader should hear about a dead server in seconds, not 30 s.
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(3));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(3));
    options.app_name.get_or_insert_with(|| "spanrec-cli".into());
    let client = Client::with_options(options).map_err(unreachable)?;
    let database = client.database(&db.database);
    database
        .run_command(doc! { "ping": 1 })
        .run()
        .map_err(unreachable)?;
    Ok(database)
}

/// A tag filter value as BSON: integers and booleans are matched by type
/// too (`--tag db.rows=3` finds Int64 3), anything else as a string.
fn tag_value(v: &str) -> Bson {
    if let Ok(i) = v.parse::<i64>() {
        return Bson::Int64(i);
    }
    match v {
        "true" => Bson::Boolean(true),
        "false" => Bson::Boolean(false),
        _ => Bson::String(v.to_owned()),
    }
}

fn filter_document(f: &Filter) -> Result<Document, CliError> {
    let mut d = Document::new();
    if let Some(op) = &f.operation {
        d.insert("name", op.as_str());
    }
    let mut all = Vec::new();
    for t in &f.tags {
        let (k, v) = t.split_once('=').ok_or_else(|| {
            CliError::Input(format!("--tag {}: expected KEY=VALUE", render::echo(t)))
        })?;
        let key = format!("tags.{}", spanrec_mongo::encode::escape_key(k));
        // The typed value (`db.rows=3` finds Int64 3) or its string form.
        all.push(Bson::Document(doc! {
            "$or": [ { key.as_str(): tag_value(v) }, { key.as_str(): v } ]
        }));
    }
    if !all.is_empty() {
        d.insert("$and", all);
    }
    match f.status.as_deref() {
        Some("error") => {
            d.insert("tags.error", true);
        }
        Some(_) => {
            d.insert("tags.error", doc! { "$ne": true });
        }
        None => {}
    }
    Ok(d)
}

fn time_range(since: Option<&str>, until: Option<&str>) -> Result<Document, CliError> {
    let now = time::now_unix_nanos();
    let mut range = Document::new();
    if let Some(s) = since {
        range.insert("$gte", time::parse_time(s, now).map_err(CliError::Input)?);
    }
    if let Some(u) = until {
        range.insert("$lt", time::parse_time(u, now).map_err(CliError::Input)?);
    }
    Ok(range)
}

/// How much later than a span that finished after it `tail` still shows a
/// span (its batch retried, or another thread's batch first): 10 s.
const LATE_WINDOW_NS: i64 = 10_000_000_000;

fn fetch(
    coll: &Collection<Document>,
    filter: Document,
    sort: Document,
    skip: u64,
    limit: i64,
) -> Result<Vec<SpanDoc>, CliError> {
    let failed = |e: mongodb::error::Error| CliError::Query(e.to_string());
    let cursor = coll
        .find(filter)
        .sort(sort)
        .skip(skip)
        .limit(limit)
        .run()
        .map_err(failed)?;
    let mut out = Vec::new();
    for doc in cursor {
        out.push(SpanDoc::from_document(&doc.map_err(failed)?));
    }
    Ok(out)
}

fn parse_trace_id(s: &str) -> Result<String, CliError> {
    let t = s.trim();
    let valid =
        (t.len() == 32 || t.len() == 16) && decode_u128(t.as_bytes(), Digits::AnyCase).is_some();
    if !valid {
        return Err(CliError::Input(format!(
            "not a trace id: {} (expected 32 hex digits, e.g. 4bf92f3577b34da6a3ce929d0e0e4736)",
            render::echo(s)
        )));
    }
    // Documents store 32 lowercase digits; a 64-bit id has a zero high half.
    Ok(format!("{:0>32}", t.to_ascii_lowercase()))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Trace { trace_id } => {
            let id = parse_trace_id(trace_id)?;
            let coll = connect(&cli.db)?;
            let spans = fetch(
                &coll,
                doc! { "trace_id": &id },
                doc! { "start_ns": 1 },
                0,
                0,
            )?;
            if spans.is_empty() {
                return Err(CliError::NotFound(format!(
                    "no spans of trace {id} in {}.{}",
                    cli.db.database, cli.db.collection
                )));
            }
            if cli.json {
                print_json(&serde_json::json!({
                    "trace_id": id,
                    "spans": spans.iter().map(SpanDoc::to_json).collect::<Vec<_>>(),
                }));
            } else {
                print!("{}", render::trace_tree(&spans));
            }
        }
        Command::Find(args) => {
            let mut filter = filter_document(&args.filter)?;
            let range = time_range(args.since.as_deref(), args.until.as_deref())?;
            if !range.is_empty() {
                filter.insert("start_ns", range);
            }
            let coll = connect(&cli.db)?;
            let spans = fetch(
                &coll,
                filter,
                doc! { "start_ns": -1 },
                args.skip,
                i64::from(args.limit),
            )?;
            if cli.json {
                print_json(&serde_json::json!({
                    "skip": args.skip,
                    "limit": args.limit,
                    "spans": spans.iter().map(SpanDoc::to_json).collect::<Vec<_>>(),
                }));
            } else {
                for s in &spans {
                    println!("{}", render::span_line(s));
                }
                if spans.len() == args.limit as usize {
                    eprintln!("(more: --skip {})", args.skip + u64::from(args.limit));
                }
            }
            if spans.is_empty() {
                return Err(CliError::NotFound("no matching spans".into()));
            }
        }
        Command::Tail {
            filter,
            interval_ms,
            max,
        } => {
            let mut base = filter_document(filter)?;
            let coll = connect(&cli.db)?;
            // Spans that start from now on, printed as they are written.
            // Documents arrive in about the order spans finish, not the
            // order they start (a request outlives its children), and not
            // exactly (each thread's spans travel in their own batches; a
            // retried batch comes later): each poll asks again for what
            // finished within `LATE_WINDOW_NS` of the latest finish seen
            // and prints only what it has not printed.
            base.insert("start_ns", doc! { "$gte": time::now_unix_nanos() });
            let mut latest_finish = i64::MIN;
            let mut shown: HashMap<(String, String), i64> = HashMap::new();
            let mut printed = 0usize;
            loop {
                let mut f = base.clone();
                f.insert(
                    "finish_ns",
                    doc! { "$gte": latest_finish.saturating_sub(LATE_WINDOW_NS) },
                );
                for s in fetch(&coll, f, doc! { "finish_ns": 1 }, 0, 0)? {
                    let finish = s.start_ns.saturating_add(s.duration_ns);
                    latest_finish = latest_finish.max(finish);
                    let key = (s.trace_id.clone(), s.span_id.clone());
                    if shown.insert(key, finish).is_some() {
                        continue;
                    }
                    if cli.json {
                        println!("{}", s.to_json());
                    } else {
                        println!("{}", render::span_line(&s));
                    }
                    printed += 1;
                    if max.is_some_and(|m| printed >= m) {
                        return Ok(());
                    }
                }
                // What the next poll cannot return again.
                let oldest = latest_finish.saturating_sub(LATE_WINDOW_NS);
                shown.retain(|_, finish| *finish >= oldest);
                std::thread::sleep(Duration::from_millis(*interval_ms));
            }
        }
        Command::Stats { since, until } => {
            let range = time_range(Some(since), until.as_deref())?;
            let coll = connect(&cli.db)?;
            // Streamed, unsorted, only the fields the table needs: a long
            // range of a busy log is millions of spans.
            let failed = |e: mongodb::error::Error| CliError::Query(e.to_string());
            let cursor = coll
                .find(doc! { "start_ns": range })
                .projection(doc! { "_id": 0, "name": 1, "duration_ns": 1, "tags.error": 1 })
                .run()
                .map_err(failed)?;
            let mut spans = 0usize;
            let mut error = None;
            let docs = cursor.map_while(|doc| match doc {
                Ok(doc) => {
                    spans += 1;
                    Some(SpanDoc::from_document(&doc))
                }
                Err(e) => {
                    error = Some(failed(e));
                    None
                }
            });
            let stats = render::operation_stats(docs);
            if let Some(e) = error {
                return Err(e);
            }
            if cli.json {
                print_json(&serde_json::json!({
                    "spans": spans,
                    "operations": stats.iter().map(|s| serde_json::json!({
                        "name": s.name, "count": s.count, "errors": s.errors,
                        "p50_ns": s.p50_ns, "p99_ns": s.p99_ns, "max_ns": s.max_ns,
                    })).collect::<Vec<_>>(),
                }));
            } else {
                print!("{}", render::stats_table(&stats));
            }
        }
        Command::Export(args) => {
            let coll = connect(&cli.db)?;
            let spans = match &args.trace_id {
                Some(t) => {
                    let id = parse_trace_id(t)?;
                    fetch(
                        &coll,
                        doc! { "trace_id": &id },
                        doc! { "start_ns": 1 },
                        0,
                        0,
                    )?
                }
                None => {
                    let mut filter = filter_document(&args.find.filter)?;
                    let range = time_range(args.find.since.as_deref(), args.find.until.as_deref())?;
                    if !range.is_empty() {
                        filter.insert("start_ns", range);
                    }
                    // The page `find` shows with the same arguments (the
                    // newest first), written oldest first.
                    let mut page = fetch(
                        &coll,
                        filter,
                        doc! { "start_ns": -1 },
                        args.find.skip,
                        i64::from(args.find.limit),
                    )?;
                    page.reverse();
                    page
                }
            };
            if spans.is_empty() {
                return Err(CliError::NotFound("no matching spans".into()));
            }
            let text = serde_json::to_string_pretty(&export::export(&spans, args.format))
                .unwrap_or_default();
            match &args.output {
                Some(path) => std::fs::write(path, text + "\n").map_err(|e| {
                    CliError::Input(format!("cannot write {}: {e}", path.display()))
                })?,
                None => println!("{text}"),
            }
        }
        Command::Verify(args) => {
            let report = verify::run(&cli.db, || connect_database(&cli.db), args)?;
            if cli.json {
                print_json(&verify::to_json(&report));
            } else {
                print!("{}", verify::to_text(&report));
            }
            if !report.intact() {
                return Err(CliError::NotIntact(report.violations.len()));
            }
            // Nothing proves an empty log was not wiped (or that the name
            // is not a typo): not "intact".
            if report.records == 0 {
                return Err(CliError::NotFound(format!(
                    "no chain records in {}.{}: nothing to verify (an empty log and a \
                     wiped one look the same; --checkpoint or --head tell them apart)",
                    cli.db.database,
                    spanrec_mongo::chain::collection_name(&cli.db.collection)
                )));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spanrec: {e}");
            e.exit_code()
        }
    }
}
