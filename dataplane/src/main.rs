//! `prapi`: one binary, one subcommand per component (DESIGN §1).

fn main() {
    println!("prapi: under construction");
}
