//! `verbund-operator`: see [`verbund_operator::cli`].

fn main() -> std::process::ExitCode {
    verbund_operator::cli::main()
}
