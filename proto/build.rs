//! Compiles the .proto files with protox (pure Rust), so a fresh machine needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/drpc.proto",
        "proto/srv.proto",
        "proto/auth.proto",
        "proto/mgmt.proto",
        "proto/pool.proto",
        "proto/obj.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
