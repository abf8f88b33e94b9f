fn main() {
    println!("rinx: under construction");
}
