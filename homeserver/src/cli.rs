//! The command line: `axon` (serve), `generate-config`, `check-config`, `register-user`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use axon_config::{CONFIG_ENV_VAR, Config, ConfigError};
use axon_core::accounts::{AccountError, Accounts, NewRegistrationToken, RegisterRequest};
use clap::{Parser, Subcommand};
use ruma::OwnedUserId;

use crate::observability::{self, LogFormat, OtlpSettings};
use crate::server;

/// Axon, a Matrix homeserver.
#[derive(Debug, Parser)]
#[command(name = "axon", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply; `AXON_*`
    /// environment variables override either.
    #[arg(long, short, global = true, env = CONFIG_ENV_VAR, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a complete, commented example configuration.
    GenerateConfig,
    /// Check a configuration file (and the `AXON_*` variables) and report every problem.
    CheckConfig {
        /// The file to check; defaults to `--config`.
        file: Option<PathBuf>,
    },
    /// Create a local user directly in the database (the server must be stopped; while it
    /// runs, use the shared-secret registration endpoint instead).
    RegisterUser {
        /// The localpart (`alice`) or full user id (`@alice:example.org`).
        #[arg(long, short)]
        user: String,
        /// The password; read from standard input when omitted.
        #[arg(long, short)]
        password: Option<String>,
        /// Make the user a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Create a registration token directly in the database (the server must be stopped;
    /// while it runs, use the admin API).
    CreateRegistrationToken {
        /// The token text (1 to 64 of `A-Z a-z 0-9 . _ ~ -`); generated when omitted.
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows; unlimited when omitted.
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
        /// Days until it expires; never when omitted.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config.as_deref()),
        Command::GenerateConfig => {
            print_out(&axon_config::example_toml());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => check_config(file.or(cli.config).as_deref()),
        Command::RegisterUser {
            user,
            password,
            admin,
        } => register_user(cli.config.as_deref(), &user, password, admin),
        Command::CreateRegistrationToken {
            token,
            uses,
            expires_in_days,
        } => create_registration_token(cli.config.as_deref(), token, uses, expires_in_days),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    axon_config::load(path, std::env::vars()).map_err(|err| {
        report_config_error(path, &err);
        ExitCode::from(2)
    })
}

fn report_config_error(path: Option<&Path>, err: &ConfigError) {
    let source = path.map_or_else(|| "the environment".to_owned(), |p| p.display().to_string());
    print_err(&format!("axon: invalid configuration in {source}:\n{err}"));
}

fn check_config(path: Option<&Path>) -> ExitCode {
    let Some(path) = path else {
        print_err("axon: check-config needs a file: `axon check-config FILE`");
        return ExitCode::from(2);
    };
    match load_config(Some(path)) {
        Ok(config) => {
            print_out(&format!("{}: configuration is valid", path.display()));
            for warning in config.warnings() {
                print_out(&format!("warning: {warning}"));
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            print_err(&format!("axon: cannot start the async runtime: {err}"));
            ExitCode::FAILURE
        })
}

fn serve(path: Option<&Path>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Rustls needs one process-wide crypto provider; ring avoids a C toolchain for aws-lc.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async move {
        let format = match config.logging.format {
            axon_config::LogFormat::Json => LogFormat::Json,
            _ => LogFormat::Pretty,
        };
        let otlp = config
            .opentelemetry
            .otlp_endpoint
            .clone()
            .map(|endpoint| OtlpSettings {
                endpoint,
                service_name: config.opentelemetry.service_name.clone(),
                sample_ratio: config.opentelemetry.sample_ratio,
            });
        let _telemetry = match observability::init(format, &config.logging.filter, otlp) {
            Ok(guard) => guard,
            Err(err) => {
                print_err(&format!("axon: cannot set up logging: {err}"));
                return ExitCode::FAILURE;
            }
        };
        match server::serve(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "axon stopped with an error");
                print_err(&format!("axon: {err}"));
                ExitCode::FAILURE
            }
        }
    })
}

fn register_user(
    path: Option<&Path>,
    user: &str,
    password: Option<String>,
    admin: bool,
) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let password = match password {
        Some(password) => password,
        None => match read_password_from_stdin() {
            Ok(password) => password,
            Err(err) => {
                print_err(&format!(
                    "axon: cannot read the password from standard input: {err}"
                ));
                return ExitCode::FAILURE;
            }
        },
    };
    let services = match server::build_services(&config) {
        Ok(services) => services,
        Err(err) => {
            print_err(&format!("axon: {err}"));
            return ExitCode::FAILURE;
        }
    };
    match create_user(&services.accounts, user, &password, admin) {
        Ok(user_id) => {
            print_out(&format!(
                "created {user_id}{}",
                if admin { " (admin)" } else { "" }
            ));
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_err(&format!("axon: cannot create {user}: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn create_user(
    accounts: &Accounts,
    user: &str,
    password: &str,
    admin: bool,
) -> Result<OwnedUserId, AccountError> {
    let user_id = accounts.parse_login_user(user)?;
    accounts.check_password_strength(password)?;
    let hash = accounts.hash_password(password)?;
    let mut request = RegisterRequest::user(user_id.localpart(), Some(hash));
    request.admin = admin;
    accounts.register(request)
}

fn create_registration_token(
    path: Option<&Path>,
    token: Option<String>,
    uses: Option<u32>,
    expires_in_days: Option<u32>,
) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let services = match server::build_services(&config) {
        Ok(services) => services,
        Err(err) => {
            print_err(&format!("axon: {err}"));
            return ExitCode::FAILURE;
        }
    };
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    let expiry_time =
        expires_in_days.map(|days| axon_core::accounts::now_ms() + u64::from(days) * DAY_MS);
    let created = services
        .accounts
        .registration_tokens()
        .create(NewRegistrationToken {
            token,
            length: None,
            uses_allowed: uses,
            expiry_time,
        });
    match created {
        Ok(token) => {
            print_out(&token.token);
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_err(&format!(
                "axon: cannot create the registration token: {err}"
            ));
            ExitCode::FAILURE
        }
    }
}

fn read_password_from_stdin() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

fn print_err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}
