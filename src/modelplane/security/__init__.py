"""Zero-trust security: identities and credentials, ABAC policies, risk scoring, the audit log.

Every component takes time as an argument (``now``) so it is pure and testable; persistence is
through small SQLAlchemy tables each sub-package defines on its own ``MetaData``.
"""
