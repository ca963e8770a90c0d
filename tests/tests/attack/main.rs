//! The attack suite: what a hostile client tries against the real binary (issue 13), one
//! module per area, each test failing on the code before its fix.

mod rooms;
