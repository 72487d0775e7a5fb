//! `spanrec verify`: reads the chain records and the span documents, hands
//! them to `spanrec_mongo::verify`, and prints the verdict.

use crate::{render::clean, time, CliError, DbArgs};
use bson::raw::RawDocumentBuf;
use bson::{doc, Bson, Document};
use mongodb::sync::Database;
use spanrec_mongo::chain::{ChainHead, ChainKey};
use spanrec_mongo::verify::{parse_head, verify, Report, VerifyOptions};
use std::path::PathBuf;

/// Arguments of `spanrec verify`.
#[derive(clap::Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Only this chain (one recorder instance).
    #[arg(long)]
    chain: Option<String>,
    /// Only chain records written at or after this time (`24h`, RFC 3339
    /// UTC) and their documents; chains may then start mid-way.
    #[arg(long)]
    since: Option<String>,
    /// A chain head kept outside the database: `SEQ:HASH` or
    /// `CHAIN:SEQ:HASH` (repeatable). It must be on record: detects a
    /// truncated or rewritten log.
    #[arg(long = "head", value_name = "[CHAIN:]SEQ:HASH")]
    heads: Vec<String>,
    /// A checkpoint file the recorder appended to (`MongoOptions::
    /// checkpoint_file`): every line must be on record.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// The HMAC key file (`MongoOptions::chain_key`): every record's MAC is
    /// checked. Never printed.
    #[arg(long, value_name = "PATH", conflicts_with = "key_env")]
    key_file: Option<PathBuf>,
    /// The environment variable holding the HMAC key.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
}

fn heads(args: &VerifyArgs) -> Result<Vec<ChainHead>, CliError> {
    let mut out = Vec::new();
    for h in &args.heads {
        out.push(parse_head(h).ok_or_else(|| {
            CliError::Input(format!(
                "--head {}: expected SEQ:HASH or CHAIN:SEQ:HASH (HASH: 64 hex digits)",
                crate::render::echo(h)
            ))
        })?);
    }
    if let Some(path) = &args.checkpoint {
        let text = crate::input_file::lines(path, usize::MAX).map_err(|e| {
            CliError::Input(format!("cannot read --checkpoint {}: {e}", path.display()))
        })?;
        for (i, line) in text
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(ChainHead::parse(line).ok_or_else(|| {
                CliError::Input(format!(
                    "--checkpoint {} line {}: expected `chain seq hash`",
                    path.display(),
                    i + 1
                ))
            })?);
        }
    }
    Ok(out)
}

fn key(args: &VerifyArgs) -> Result<Option<ChainKey>, CliError> {
    let key = match (&args.key_file, &args.key_env) {
        (Some(path), _) => ChainKey::from_file(path),
        (None, Some(var)) => ChainKey::from_env(var),
        (None, None) => return Ok(None),
    };
    key.map(Some).map_err(|e| CliError::Input(e.to_string()))
}

/// Checks the log; `Ok(report)` whether intact or not. The arguments are
/// checked (and the key and checkpoint files read) before `connect` is
/// called: bad input is said without waiting for a server.
pub(crate) fn run(
    db: &DbArgs,
    connect: impl FnOnce() -> Result<Database, CliError>,
    args: &VerifyArgs,
) -> Result<Report, CliError> {
    let options = VerifyOptions {
        key: key(args)?,
        heads: heads(args)?,
        partial: args.chain.is_some() || args.since.is_some(),
    };
    let failed = |e: mongodb::error::Error| CliError::Query(e.to_string());
    let mut record_filter = Document::new();
    if let Some(c) = &args.chain {
        record_filter.insert("chain", c.as_str());
    }
    let since_ns = match &args.since {
        Some(s) => Some(time::parse_time(s, time::now_unix_nanos()).map_err(CliError::Input)?),
        None => None,
    };
    let database = connect()?;
    if let Some(ns) = since_ns {
        record_filter.insert(
            "time",
            doc! { "$gte": bson::DateTime::from_millis(ns / 1_000_000) },
        );
    }
    let records: Vec<RawDocumentBuf> = database
        .collection::<RawDocumentBuf>(&spanrec_mongo::chain::collection_name(&db.collection))
        .find(record_filter)
        .run()
        .map_err(failed)?
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    // The documents of the chains read, from each chain's first record on.
    let mut first: std::collections::BTreeMap<String, i64> = Default::default();
    for r in &records {
        if let (Ok(c), Ok(s)) = (r.get_str("chain"), r.get_i64("seq")) {
            let e = first.entry(c.to_owned()).or_insert(s);
            *e = (*e).min(s);
        }
    }
    let spans_coll = database.collection::<RawDocumentBuf>(&db.collection);
    // The documents stream through `verify` (which keeps ~64 bytes of
    // each): a log larger than memory is checked in one pass.
    let mut cursors = Vec::new();
    if options.partial {
        let ors: Vec<Bson> = first
            .iter()
            .map(|(c, s)| Bson::Document(doc! { "chain": c, "seq": { "$gte": *s } }))
            .collect();
        if !ors.is_empty() {
            cursors.push(spans_coll.find(doc! { "$or": ors }).run().map_err(failed)?);
        }
        if args.chain.is_none() {
            let mut unchained = doc! { "chain": { "$exists": false } };
            if let Some(ns) = since_ns {
                unchained.insert("start_ns", doc! { "$gte": ns });
            }
            cursors.push(spans_coll.find(unchained).run().map_err(failed)?);
        }
    } else {
        cursors.push(spans_coll.find(Document::new()).run().map_err(failed)?);
    }
    // A read that fails mid-way ends the stream; the error is the answer
    // (a report on part of the documents would be wrong).
    let mut read_error = None;
    let spans = cursors.into_iter().flatten().map_while(|d| match d {
        Ok(d) => Some(d),
        Err(e) => {
            read_error = Some(e);
            None
        }
    });
    let report = verify(&records, spans, &options);
    match read_error {
        Some(e) => Err(failed(e)),
        None => Ok(report),
    }
}

pub(crate) fn to_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "intact": r.intact(),
        "chains": r.chains.iter().map(|c| serde_json::json!({
            "chain": c.chain, "first_seq": c.first_seq, "last_seq": c.last_seq,
            "head": c.head, "prev_chain": c.prev_chain,
        })).collect::<Vec<_>>(),
        "records": r.records,
        "verified_spans": r.verified_spans,
        "gaps": r.gaps.iter().map(|g| serde_json::json!({
            "chain": g.chain, "seq": g.seq, "of_seq": g.of_seq, "reason": g.reason, "n": g.n,
        })).collect::<Vec<_>>(),
        "violations": r.violations.iter().map(|v| serde_json::json!({
            "chain": v.chain, "seq": v.seq, "document": v.document, "problem": v.problem,
        })).collect::<Vec<_>>(),
        "macs_unchecked": r.macs_unchecked,
    })
}

pub(crate) fn to_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in &r.chains {
        let _ = write!(
            out,
            "chain {} records {}..={} head {}",
            clean(&c.chain),
            c.first_seq,
            c.last_seq,
            c.head
        );
        if let Some(p) = &c.prev_chain {
            let _ = write!(out, " (follows {})", clean(p));
        }
        out.push('\n');
    }
    for g in &r.gaps {
        let _ = write!(
            out,
            "gap: {} spans {} (chain {} record {}",
            g.n,
            clean(&g.reason),
            clean(&g.chain),
            g.seq
        );
        if let Some(of) = g.of_seq {
            let _ = write!(out, ", of batch {of}");
        }
        out.push_str(")\n");
    }
    for v in &r.violations {
        let _ = write!(out, "VIOLATION chain {}", clean(&v.chain));
        if let Some(s) = v.seq {
            let _ = write!(out, " record {s}");
        }
        if let Some(d) = &v.document {
            let _ = write!(out, " document {}", clean(d));
        }
        let _ = writeln!(out, ": {}", clean(&v.problem));
    }
    let _ = writeln!(
        out,
        "{} spans verified in {} records of {} chains; {} gap entries; {}",
        r.verified_spans,
        r.records,
        r.chains.len(),
        r.gaps.len(),
        if r.intact() && r.records == 0 {
            "nothing to verify".to_string()
        } else if r.intact() {
            "intact".to_string()
        } else {
            format!("NOT INTACT: {} violations", r.violations.len())
        }
    );
    if r.macs_unchecked {
        out.push_str("(records carry MACs; give --key-file or --key-env to check them)\n");
    }
    out
}
