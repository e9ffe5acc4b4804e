//! Shared test harnesses; each integration test uses only some of them.
#![allow(dead_code)]

pub mod chain;
pub mod prom;
pub mod sshd;
