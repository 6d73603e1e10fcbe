//! Test harnesses shared by the integration tests.
//!
//! Each test binary uses a different subset of these helpers, so unused ones are not warnings.
#![allow(dead_code)]

pub mod etcd;
pub mod logs;
pub mod pki;
pub mod proxy;
pub mod recording;
