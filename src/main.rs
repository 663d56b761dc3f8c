//! nbdscript's entry point. The program (parse the command line, fork
//! into the background unless told otherwise, build the stack, serve) is
//! in the library, where it reaches the crate's internals without making
//! them public.

fn main() -> std::process::ExitCode {
    nbdscript::run_cli()
}
