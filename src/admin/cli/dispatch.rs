//! From parsed commands to the shared operations in `admin::actions`.

use super::commands::*;
use super::Cli;
use crate::admin::actions::access::IpChange;
use crate::admin::actions::{
    access, admins, auditing, identities, keys, prices, privacy, providers, system, tenants, Reply,
};
use crate::admin::session::Session;
use crate::admin::store::policy::ProviderSpec;
use crate::admin::AdminError;
use crate::core::bundle::schema::PriceDoc;
use crate::core::bundle::schema::{LogRetentionDoc, Status};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

pub fn run(s: &Session, command: &Command, cli: &Cli) -> Result<Reply, AdminError> {
    match command {
        Command::Init(_) => Err(AdminError::Internal("init is handled before a session exists".into())),
        Command::Tenant(c) => tenant(s, c),
        Command::SubAccount(c) => sub_account(s, c),
        Command::Key(c) => key(s, c),
        Command::Ip(c) => ip(s, c),
        Command::Quota(c) => quota(s, c),
        Command::Provider(c) => provider(s, c),
        Command::Price(c) => price(s, c),
        Command::Publish(a) => {
            let mode = match (a.delta, a.full) {
                (true, _) => crate::admin::publish::Mode::Delta,
                (_, true) => crate::admin::publish::Mode::Full,
                _ => crate::admin::publish::Mode::Auto,
            };
            system::publish_with(s, a.ecds_file.as_deref(), a.wasm.as_deref(), mode)
        }
        Command::Status => system::status(s),
        Command::BundleKey { out } => system::bundle_key(s, out),
        Command::Sync { bundle_key_out } => system::sync(s, bundle_key_out.as_deref()),
        Command::Incident(IncidentCmd::Revoke { key_id }) => keys::incident_revoke(s, key_id),
        Command::Admin(c) => admin(s, c),
        Command::TwoFa(c) => two_fa(s, c),
        Command::Audit(c) => audit(s, c),
        Command::Usage(a) if a.current => auditing::usage_current(s, &a.query(), &a.redis),
        Command::Usage(a) => auditing::usage(s, &a.query()),
        Command::Logs(LogsCmd::Prune { access_log, retention, drop_tenant, .. }) => {
            let tenants = crate::admin::retention::tenant_rules(&s.store.load()?.policy.tenants);
            auditing::prune_logs(access_log, retention.days(), tenants, drop_tenant.as_deref(), s.now)
        }
        Command::Oidc(OidcCmd::Map(a)) => identities::map(s, &a.mapping()),
        Command::Oidc(OidcCmd::Unmap(a)) => identities::unmap(s, &a.identity()),
        Command::Oidc(OidcCmd::List) => identities::list(s),
        Command::Serve(a) => crate::admin::api::serve(s.store, &a.options(), &cli.home)
            .map(|()| Reply::new("stopped", serde_json::json!({}))),
        // Handled before a store is opened (see `cli::run`).
        Command::Ratelimit(a) => crate::admin::ratelimit::run(a).map(|()| Reply::new("stopped", serde_json::json!({}))),
    }
}

fn status_of(disable: bool) -> Status {
    if disable {
        Status::Disabled
    } else {
        Status::Active
    }
}

fn tenant(s: &Session, c: &TenantCmd) -> Result<Reply, AdminError> {
    match c {
        TenantCmd::Add { id, name, region } => tenants::add(s, id, name, region),
        TenantCmd::List => tenants::list(s),
        TenantCmd::Show { id } => tenants::show(s, id),
        TenantCmd::Export { id, out, access_log } => privacy::export(s, id, access_log.as_deref(), out.as_deref()),
        TenantCmd::Erase { id, confirm, access_log } => privacy::erase_tenant(s, id, confirm, access_log),
        TenantCmd::Disable { id } => tenants::set_status(s, id, Status::Disabled),
        TenantCmd::Enable { id } => tenants::set_status(s, id, Status::Active),
        TenantCmd::SetRegion { id, region } => tenants::set_region(s, id, region),
        TenantCmd::ClientAddress { id, action } => {
            tenants::set_client_address(s, id, matches!(action, ClientAddress::Forward))
        }
        TenantCmd::SetModels { id, models } => tenants::set_models(s, id, None, models),
        TenantCmd::LogRetention { id, retain_days, truncate_ips_after_days, truncate_at_write } => {
            let truncate_ips_after_days = if *truncate_at_write { Some(0) } else { *truncate_ips_after_days };
            tenants::set_log_retention(s, id, LogRetentionDoc { retain_days: *retain_days, truncate_ips_after_days })
        }
    }
}

fn sub_account(s: &Session, c: &SubAccountCmd) -> Result<Reply, AdminError> {
    match c {
        SubAccountCmd::Add { tenant, id } => tenants::sub_add(s, tenant, id),
        SubAccountCmd::List { tenant } => tenants::sub_list(s, tenant),
        SubAccountCmd::Disable { tenant, id } => tenants::sub_set_status(s, tenant, id, Status::Disabled),
        SubAccountCmd::Enable { tenant, id } => tenants::sub_set_status(s, tenant, id, Status::Active),
        SubAccountCmd::SetModels { tenant, id, models } => tenants::set_models(s, tenant, Some(id), models),
    }
}

fn key(s: &Session, c: &KeyCmd) -> Result<Reply, AdminError> {
    match c {
        KeyCmd::Create(args) => keys::create(s, &args.spec()),
        KeyCmd::List { tenant } => keys::list(s, tenant.as_deref()),
        KeyCmd::Show { id } => keys::show(s, id),
        KeyCmd::Rotate { id, grace } => keys::rotate(s, id, grace),
        KeyCmd::Disable { id } => keys::set_status(s, id, status_of(true)),
        KeyCmd::Enable { id } => keys::set_status(s, id, status_of(false)),
        KeyCmd::Delete { id } => keys::delete(s, id),
        KeyCmd::SetScopes { id, scopes } => keys::set_scopes(s, id, &scopes.scopes()),
        KeyCmd::SetExpiry { id, r#in, never } => keys::set_expiry(s, id, if *never { None } else { r#in.as_deref() }),
    }
}

fn ip(s: &Session, c: &IpCmd) -> Result<Reply, AdminError> {
    match c {
        IpCmd::Allow { target, cidrs } => access::ip_change(s, &target.level()?, IpChange::Allow(cidrs)),
        IpCmd::Deny { target, cidrs } => access::ip_change(s, &target.level()?, IpChange::Deny(cidrs)),
        IpCmd::Enable { target } => access::ip_change(s, &target.level()?, IpChange::Enabled(true)),
        IpCmd::Disable { target } => access::ip_change(s, &target.level()?, IpChange::Enabled(false)),
        IpCmd::List { target } => access::ip_list(s, &target.level()?),
    }
}

fn quota(s: &Session, c: &QuotaCmd) -> Result<Reply, AdminError> {
    match c {
        QuotaCmd::Set(args) => access::quota_set(s, &args.target.level()?, args.quota(), args.budget()?),
        QuotaCmd::Show { target } => access::quota_show(s, &target.level()?),
        QuotaCmd::Clear { target } => access::quota_clear(s, &target.level()?),
        QuotaCmd::Mode { mode: Some(mode) } => access::quota_mode_set(s, (*mode).into()),
        QuotaCmd::Mode { mode: None } => access::quota_mode_show(s),
        QuotaCmd::Metering { soft_limit_percent: None, default_output_tokens: None } => access::metering_show(s),
        QuotaCmd::Metering { soft_limit_percent, default_output_tokens } => {
            access::metering_set(s, *soft_limit_percent, *default_output_tokens)
        }
    }
}

fn price(s: &Session, c: &PriceCmd) -> Result<Reply, AdminError> {
    match c {
        PriceCmd::Set { provider, model, input, cached_input, output } => prices::set(
            s,
            PriceDoc {
                provider: provider.clone(),
                model: model.clone(),
                input: prices::per_million(input, "--input")?,
                cached_input: prices::per_million(cached_input, "--cached-input")?,
                output: prices::per_million(output, "--output")?,
            },
        ),
        PriceCmd::List => prices::list(s),
        PriceCmd::Remove { provider, model } => prices::remove(s, provider, model),
    }
}

fn provider(s: &Session, c: &ProviderCmd) -> Result<Reply, AdminError> {
    match c {
        ProviderCmd::Set { id, path_prefix, header, format, tenant, secret_file, shared_preset, shared_endpoint } => {
            let secret = read_secret(secret_file.as_deref())?;
            let spec = ProviderSpec {
                id: id.clone(),
                path_prefix: path_prefix.clone(),
                header: header.clone(),
                format: format.clone(),
                shared_preset: shared_preset.clone(),
                shared_endpoints: shared_endpoint.clone(),
            };
            providers::set(s, spec, tenant.as_deref(), secret)
        }
        ProviderCmd::List => providers::list(s),
        ProviderCmd::Remove { id } => providers::remove(s, id),
    }
}

/// A secret from a file or stdin; trailing newline removed.
fn read_secret(file: Option<&Path>) -> Result<Zeroizing<String>, AdminError> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(p) => *text = std::fs::read_to_string(p).map_err(|e| AdminError::io(p, e))?,
        // On a terminal: one line, not echoed. Piped: all of stdin.
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            *text = rpassword::prompt_password("Provider secret (not shown): ")
                .map_err(|e| AdminError::Io(format!("terminal: {e}")))?;
        }
        None => {
            std::io::stdin().read_to_string(&mut text).map_err(|e| AdminError::Io(format!("stdin: {e}")))?;
        }
    }
    let trimmed = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if trimmed.is_empty() {
        return Err(AdminError::Usage("the secret is empty (pipe it on stdin or use --secret-file)".into()));
    }
    Ok(trimmed)
}

fn admin(s: &Session, c: &AdminCmd) -> Result<Reply, AdminError> {
    match c {
        AdminCmd::Add { name, role, tenant } => admins::add(s, name, (*role).into(), tenant.as_deref()),
        AdminCmd::List => admins::list(s),
        AdminCmd::Disable { name } => admins::set_status(s, name, Status::Disabled),
        AdminCmd::Enable { name } => admins::set_status(s, name, Status::Active),
        AdminCmd::Remove { name } => admins::remove(s, name),
        AdminCmd::Erase { name, confirm } => privacy::erase_admin(s, name, confirm),
        AdminCmd::Token(TokenCmd::Create { name, label }) => admins::token_create(s, name, label),
        AdminCmd::Token(TokenCmd::List { name }) => admins::token_list(s, name),
        AdminCmd::Token(TokenCmd::Revoke { name, token_id }) => admins::token_revoke(s, name, token_id),
    }
}

fn two_fa(s: &Session, c: &TwoFaCmd) -> Result<Reply, AdminError> {
    match c {
        TwoFaCmd::Enroll { png } => admins::enroll(s, png.as_deref()),
        TwoFaCmd::Verify => admins::verify(s),
        TwoFaCmd::RecoveryCodes => admins::recovery_codes(s),
        TwoFaCmd::Reset { name } => admins::reset(s, name),
        TwoFaCmd::Status => admins::status(s),
    }
}

fn audit(s: &Session, c: &AuditCmd) -> Result<Reply, AdminError> {
    match c {
        AuditCmd::Tail { n } => auditing::tail(s, *n),
        AuditCmd::Search(args) => auditing::search(s, &args.query()),
        AuditCmd::Verify => auditing::verify(s),
        AuditCmd::Rebind => auditing::rebind(s),
    }
}
