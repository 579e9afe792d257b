//! Framing benchmarks: how fast [`FrameScanner::next`] splits a read buffer into messages, and
//! what the two decoders the relay runs most often cost.
//!
//! This is the relay's per-read hot path: every buffer read from a client or a server is scanned
//! message by message before it is forwarded, so the scanner's cost is paid on every byte that
//! crosses pgward. The cases mirror the relay:
//!
//! - `server_select_replies`: 16 simple-query select-only replies (RowDescription, DataRow,
//!   CommandComplete, ReadyForQuery; 64 messages) in one read, scanned with the relay's server-side
//!   predicate, so 'T' and 'D' pass through and 'C' and 'Z' are inspected whole;
//! - `client_extended_pipeline`: 16 pipelined Parse/Bind/Describe/Execute/Sync queries (80
//!   messages) in one read, every type inspected (the relay's client side inspects everything but
//!   CopyData);
//! - `datarow_1mib_in_8kib_reads`: one 1 MiB DataRow arriving in 8 KiB reads, the Passthrough path
//!   that streams a large message without buffering it whole.
//!
//! Throughput is in bytes of protocol traffic scanned.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgward::protocol::frame::{Chunk, FrameScanner};
use pgward::protocol::messages::{TxStatus, decode_parse, decode_ready};

/// The relay's bound on server messages it inspects (`MAX_INSPECTED_SERVER_MESSAGE`).
const MAX_SERVER_MESSAGE: usize = 64 * 1024 * 1024;
/// The default `server.max_message_bytes`, the relay's bound on client messages.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024 * 1024;
/// Queries (server replies) per scanned buffer.
const BATCH: usize = 16;
/// Size of one read in the streamed case.
const READ_SIZE: usize = 8 * 1024;
/// Total size of the streamed DataRow, header included.
const BIG_ROW: usize = 1024 * 1024;

const QUERY: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const INT4_OID: i32 = 23;

/// Same predicate as the relay's server side (`inspect_server`).
fn inspect_server(tag: u8) -> bool {
    matches!(tag, b'Z' | b'C' | b'E' | b'I' | b's' | b'G' | b'W')
}

/// Every message type is inspected whole.
fn inspect_all(_tag: u8) -> bool {
    true
}

fn put_msg(buf: &mut Vec<u8>, tag: u8, body: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    buf.extend_from_slice(body);
}

fn cstr(body: &mut Vec<u8>, s: &str) {
    body.extend_from_slice(s.as_bytes());
    body.push(0);
}

/// RowDescription, DataRow, CommandComplete, ReadyForQuery: the reply to one pgbench-style
/// `SELECT abalance ...` returning one int4 row.
fn select_reply(buf: &mut Vec<u8>) {
    let mut t = Vec::new();
    t.extend_from_slice(&1i16.to_be_bytes()); // field count
    cstr(&mut t, "abalance");
    t.extend_from_slice(&16_397i32.to_be_bytes()); // table OID
    t.extend_from_slice(&3i16.to_be_bytes()); // column number
    t.extend_from_slice(&INT4_OID.to_be_bytes()); // type OID
    t.extend_from_slice(&4i16.to_be_bytes()); // type size
    t.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
    t.extend_from_slice(&0i16.to_be_bytes()); // text format
    put_msg(buf, b'T', &t);

    let value = b"-4213";
    let mut d = Vec::new();
    d.extend_from_slice(&1i16.to_be_bytes());
    d.extend_from_slice(&(value.len() as i32).to_be_bytes());
    d.extend_from_slice(value);
    put_msg(buf, b'D', &d);

    put_msg(buf, b'C', b"SELECT 1\0");
    put_msg(buf, b'Z', b"I");
}

fn parse_body() -> Vec<u8> {
    let mut p = Vec::new();
    cstr(&mut p, ""); // unnamed statement
    cstr(&mut p, QUERY);
    p.extend_from_slice(&1i16.to_be_bytes());
    p.extend_from_slice(&INT4_OID.to_be_bytes());
    p
}

/// Parse, Bind, Describe (portal), Execute, Sync for one query with one text parameter.
fn extended_query(buf: &mut Vec<u8>) {
    put_msg(buf, b'P', &parse_body());

    let param = b"48213";
    let mut b = Vec::new();
    cstr(&mut b, ""); // portal
    cstr(&mut b, ""); // statement
    b.extend_from_slice(&0i16.to_be_bytes()); // parameter format codes: all text
    b.extend_from_slice(&1i16.to_be_bytes()); // parameter count
    b.extend_from_slice(&(param.len() as i32).to_be_bytes());
    b.extend_from_slice(param);
    b.extend_from_slice(&0i16.to_be_bytes()); // result format codes: all text
    put_msg(buf, b'B', &b);

    put_msg(buf, b'D', b"P\0");

    let mut e = Vec::new();
    cstr(&mut e, "");
    e.extend_from_slice(&0i32.to_be_bytes()); // no row limit
    put_msg(buf, b'E', &e);

    put_msg(buf, b'S', b"");
}

/// One DataRow of one bytea-like column, `BIG_ROW` bytes on the wire.
fn big_datarow() -> Vec<u8> {
    // Header (5) + field count (2) + field length (4).
    let value_len = BIG_ROW - 5 - 2 - 4;
    let mut d = Vec::with_capacity(BIG_ROW - 5);
    d.extend_from_slice(&1i16.to_be_bytes());
    d.extend_from_slice(&(value_len as i32).to_be_bytes());
    d.resize(BIG_ROW - 5, b'x');
    let mut buf = Vec::with_capacity(BIG_ROW);
    put_msg(&mut buf, b'D', &d);
    buf
}

/// Scans one read buffer the way the relay does: chunk after chunk until more bytes are needed.
/// Returns the bytes consumed and the number of whole (inspected) messages.
fn scan_read(
    scanner: &mut FrameScanner,
    buf: &[u8],
    inspect: fn(u8) -> bool,
    max_len: usize,
) -> (usize, usize) {
    let mut pos = 0;
    let mut whole = 0;
    while let Some(chunk) = scanner
        .next(&buf[pos..], inspect, max_len)
        .expect("well-formed stream")
    {
        pos += match chunk {
            Chunk::Whole(f) => {
                whole += 1;
                f.len
            }
            Chunk::Passthrough { len, .. } => len,
        };
    }
    (pos, whole)
}

fn bench_scan(c: &mut Criterion) {
    let mut server = Vec::new();
    for _ in 0..BATCH {
        select_reply(&mut server);
    }
    let mut client = Vec::new();
    for _ in 0..BATCH {
        extended_query(&mut client);
    }
    let row = big_datarow();

    // Sanity: each case scans exactly what was built, with the expected chunk kinds.
    let mut s = FrameScanner::new();
    assert_eq!(
        scan_read(&mut s, &server, inspect_server, MAX_SERVER_MESSAGE),
        (server.len(), 2 * BATCH)
    );
    assert_eq!(
        scan_read(&mut s, &client, inspect_all, MAX_CLIENT_MESSAGE),
        (client.len(), 5 * BATCH)
    );
    for read in row.chunks(READ_SIZE) {
        assert_eq!(
            scan_read(&mut s, read, inspect_server, MAX_SERVER_MESSAGE),
            (read.len(), 0)
        );
    }
    assert!(!s.mid_message());

    let mut g = c.benchmark_group("frame_scan");

    g.throughput(Throughput::Bytes(server.len() as u64));
    g.bench_function("server_select_replies", |b| {
        b.iter(|| {
            let mut s = FrameScanner::new();
            scan_read(
                &mut s,
                black_box(&server),
                inspect_server,
                MAX_SERVER_MESSAGE,
            )
        })
    });

    g.throughput(Throughput::Bytes(client.len() as u64));
    g.bench_function("client_extended_pipeline", |b| {
        b.iter(|| {
            let mut s = FrameScanner::new();
            scan_read(&mut s, black_box(&client), inspect_all, MAX_CLIENT_MESSAGE)
        })
    });

    g.throughput(Throughput::Bytes(row.len() as u64));
    g.bench_function("datarow_1mib_in_8kib_reads", |b| {
        b.iter(|| {
            let mut s = FrameScanner::new();
            let mut total = 0;
            for read in black_box(&row).chunks(READ_SIZE) {
                total += scan_read(&mut s, read, inspect_server, MAX_SERVER_MESSAGE).0;
            }
            total
        })
    });

    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let parse = parse_body();
    assert_eq!(decode_parse(&parse).unwrap().query, QUERY);
    assert_eq!(decode_ready(b"I").unwrap(), TxStatus::Idle);

    let mut g = c.benchmark_group("decode");
    g.bench_function("parse", |b| {
        b.iter(|| decode_parse(black_box(&parse)).unwrap())
    });
    g.bench_function("ready", |b| {
        b.iter(|| decode_ready(black_box(b"I")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_scan, bench_decode);
criterion_main!(benches);
