//! The PostgreSQL v3 wire protocol as pgward needs it: framing, the startup packet, the few
//! messages it inspects, the messages it writes, and SQLSTATE codes.

pub mod frame;
pub mod messages;
pub mod sqlstate;
pub mod startup;
