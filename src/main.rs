use hostie::config::{self, Config};
use hostie::startup::Application;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", config::one_line(&e));
            return ExitCode::from(2);
        }
    };
    hostie::telemetry::init(config.log_format);
    let mut config = config;
    match hostie::fd_limit::fit(config.max_sessions) {
        Ok(fit) if fit.max_sessions < config.max_sessions => {
            tracing::warn!(
                limit = fit.limit,
                reserve = hostie::fd_limit::RESERVE,
                max_sessions = fit.max_sessions,
                asked = config.max_sessions,
                "the open-file limit is too low for --max-sessions: this node accepts fewer \
                 sessions (raise the hard RLIMIT_NOFILE, e.g. the container runtime's \
                 LimitNOFILE, or lower --max-sessions)"
            );
            config.max_sessions = fit.max_sessions;
        }
        Ok(fit) => tracing::debug!(before = fit.before, limit = fit.limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime needs only memory and a timer");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hostie failed");
            eprintln!("hostie: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(&config).await?;
    app.run_until(hostie::shutdown::signal()).await
}
