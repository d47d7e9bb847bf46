-- The wire format of the upstream that answered a request (`openai_chat`,
-- `anthropic_messages`, …): differs from the ingress route's when it was translated.
ALTER TABLE log_records ADD COLUMN upstream_format TEXT NOT NULL DEFAULT '';
