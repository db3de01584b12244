"""The default least-privilege Cedar policy set and the schema every policy update is checked against.

Kept as Python strings so they ship with the package without package-data rules.
"""

DEFAULT_POLICIES = """\
// Default least-privilege policy set. Everything not permitted here is denied.

@id("members-use-their-teams-jobs-queues-datasets")
permit (principal, action in [Action::"read", Action::"write"], resource)
when {
  principal.role == "member" &&
  (resource is Job || resource is Queue || resource is Dataset) &&
  resource has owner_team && resource.owner_team == principal.team
};

@id("service-accounts-act-within-scope-on-their-team")
permit (principal, action in [Action::"read", Action::"write"], resource)
when {
  principal.role == "service" &&
  (resource is Job || resource is Queue || resource is Dataset) &&
  resource has owner_team && resource.owner_team == principal.team &&
  principal.scopes.contains(context.required_scope)
};

@id("admins-manage-quotas-nodes-identities-policies")
permit (principal, action in [Action::"read", Action::"write"], resource)
when {
  principal.role == "admin" &&
  (resource is Quota || resource is Node || resource is Identity || resource is Policy)
};

@id("auditors-read-the-audit-log")
permit (principal, action == Action::"read", resource is AuditLog)
when { principal.role == "auditor" };

@id("deny-when-risk-is-critical")
forbid (principal, action, resource)
when { context.risk_score >= context.deny_threshold };

@id("step-up-mfa-when-risky")
forbid (principal, action, resource)
when {
  context.risk_score >= context.step_up_threshold &&
  (principal.mfa_age_s < 0 || principal.mfa_age_s > context.max_mfa_age_s)
};

@id("step-up-mfa-for-restricted-data")
forbid (principal, action == Action::"write", resource is Dataset)
when {
  resource has sensitivity && resource.sensitivity == "restricted" &&
  (principal.mfa_age_s < 0 || principal.mfa_age_s > context.max_mfa_age_s)
};
"""

SCHEMA = """\
entity User = {
  kind: String,
  team: String,
  role: String,
  scopes: Set<String>,
  mfa: Bool,
  mfa_age_s: Long,
  device_trusted: Bool,
};
entity Job, Queue, Dataset, Model = {
  owner_team: String,
  sensitivity?: String,
  stage?: String,
};
entity Quota, Node, Policy, AuditLog = {
  owner_team?: String,
};
entity Identity = {
  owner_team?: String,
  caller_is_subject?: Bool,
};
type Ctx = {
  risk_score: Long,
  step_up_threshold: Long,
  deny_threshold: Long,
  max_mfa_age_s: Long,
  required_scope: String,
  hour: Long,
  source_ip?: String,
};
action read, write appliesTo {
  principal: [User],
  resource: [Job, Queue, Dataset, Model, Quota, Node, Identity, Policy, AuditLog],
  context: Ctx,
};
"""

PLATFORM_ADDITIONS = """\

// Platform additions (stored as policy version 1 at first start by the API).

@id("platform-admins-operate-all-jobs-and-queues")
permit (principal, action in [Action::"read", Action::"write"], resource)
when { principal.role == "admin" && (resource is Job || resource is Queue) };

@id("platform-admins-manage-dataset-protection")
permit (principal, action in [Action::"read", Action::"write"], resource is Dataset)
when { principal.role == "admin" };

@id("admins-read-the-audit-log")
permit (principal, action == Action::"read", resource is AuditLog)
when { principal.role == "admin" };

@id("members-read-the-node-pool")
permit (principal, action == Action::"read", resource is Node)
when {
  principal.role == "member" ||
  (principal.role == "service" && principal.scopes.contains("nodes:read"))
};

@id("users-manage-their-own-credentials")
permit (principal, action in [Action::"read", Action::"write"], resource is Identity)
when { principal.kind == "user" && resource has caller_is_subject && resource.caller_is_subject };
"""

# What the API runs with: the least-privilege defaults plus what a working platform needs (admins
# operate every team's jobs, members see the node pool they schedule on, users manage their own MFA
# and devices). Still deny-by-default: auditors read the audit log and nothing else.
PLATFORM_POLICIES = DEFAULT_POLICIES + PLATFORM_ADDITIONS
