//! The operator binary, built by this crate so that its tests run exactly the `verbund-operator`
//! command line, compiled together with them (see `verbund_tests::operator`).

fn main() -> std::process::ExitCode {
    verbund_operator::cli::main()
}
