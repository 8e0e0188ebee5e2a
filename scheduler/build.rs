//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, a migration added to the
//! directory went unseen until some source file of this crate changed (sqlx's documented fix).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
