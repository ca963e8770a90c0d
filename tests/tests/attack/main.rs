//! The attack suite: hostile clients against the real binary over real sockets, one module per
//! area of the hardening issue.

mod conn;
