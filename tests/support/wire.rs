//! Builders for raw frontend messages, for tests that must send exactly the bytes they mean
//! (pipelines, malformed or unusual sequences) through a [`super::pgward::RawSession`].

/// A typed message: tag, length, body.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse of the unnamed statement, no parameter types.
pub fn parse(query: &str) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(query.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind of the unnamed portal to the unnamed statement, text parameters.
pub fn bind(params: &[&[u8]]) -> Vec<u8> {
    bind_named("", params)
}

/// Execute of the unnamed portal, all rows.
pub fn execute() -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// Parse, Bind and Execute of one statement without parameters (no Sync).
pub fn pbe(query: &str) -> Vec<u8> {
    let mut v = parse(query);
    v.extend(bind(&[]));
    v.extend(execute());
    v
}

/// Parse of a named statement with parameter type OIDs (0 = unspecified).
pub fn parse_named(name: &str, query: &str, types: &[u32]) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(query.as_bytes());
    b.push(0);
    b.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for t in types {
        b.extend_from_slice(&t.to_be_bytes());
    }
    msg(b'P', &b)
}

/// Bind of the unnamed portal to the named statement `name`, text parameters.
pub fn bind_named(name: &str, params: &[&[u8]]) -> Vec<u8> {
    bind_portal("", name, params)
}

/// Bind of portal `portal` to statement `name`, text parameters.
pub fn bind_portal(portal: &str, name: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &b)
}

/// Describe ('S') or Close ('S') of a named statement: `tag` is `b'D'` or `b'C'`.
pub fn statement_target(tag: u8, name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    msg(tag, &b)
}

/// Execute of portal `portal`, all rows.
pub fn execute_portal(portal: &str) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

/// Close of portal `portal`.
pub fn close_portal(portal: &str) -> Vec<u8> {
    let mut b = vec![b'P'];
    b.extend_from_slice(portal.as_bytes());
    b.push(0);
    msg(b'C', &b)
}

/// Bind of `name` (no parameters), Execute and Sync: one run of a prepared statement.
pub fn run_named(name: &str) -> Vec<u8> {
    let mut v = bind_named(name, &[]);
    v.extend(execute());
    v.extend(sync());
    v
}
