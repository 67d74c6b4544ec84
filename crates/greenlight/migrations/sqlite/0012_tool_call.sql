-- An agent's tool call a request asks about (MCP's permission prompt): its tool name and input,
-- shown in Slack as a code block and kept whole here.
ALTER TABLE requests ADD COLUMN tool_call TEXT;
