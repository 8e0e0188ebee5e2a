//! Links the `batchctl` client as a position-dependent executable (`-no-pie`).
//!
//! Every client command is a process start, and a position-independent `batchctl` spent most of
//! a `submit` in the dynamic loader: 38,000 relocations, each page of pointers they touch copied
//! on write (about 280 pages). Linked at a fixed address it has none to apply, and a submit
//! costs 1.9 ms of CPU instead of 2.7. The price is that the client's own code and data are not
//! moved by ASLR (the C library, stack and heap still are); the client is a short-lived HTTP
//! client written in safe Rust. `batchctl-server` and `batchctl-shim` stay position-independent.
fn main() {
    println!("cargo:rustc-link-arg-bin=batchctl=-no-pie");
}
