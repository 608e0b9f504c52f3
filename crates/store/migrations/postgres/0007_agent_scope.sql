-- A token scope for flow-check agents: only the agent routes (their jobs
-- carry stored secrets), nothing else.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check
    CHECK (scope IN ('read', 'write', 'admin', 'agent'));
