//! The `verbund-operator` command line, built beside the bench so that it measures exactly
//! this checkout's operator.

fn main() -> std::process::ExitCode {
    verbund_operator::cli::main()
}
