//! Helpers shared by several test binaries (each includes this with
//! `mod common;` and uses the parts it needs).

#![allow(dead_code)]

pub mod cluster;
