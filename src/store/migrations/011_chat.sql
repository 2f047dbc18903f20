-- The chat endpoint's conversations (POST /api/chat): per user, in the API's database, so any replica
-- continues any conversation. Messages in the chat-completions shape: role, content, and for the model's
-- tool calls and their results the calls (jsonb) and the call id.
CREATE TABLE chat_conversations (
  id         uuid PRIMARY KEY,
  user_id    text NOT NULL,
  title      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_conversations_user ON chat_conversations (user_id, updated_at DESC, id);

CREATE TABLE chat_messages (
  id              bigserial PRIMARY KEY,
  conversation_id uuid NOT NULL REFERENCES chat_conversations (id) ON DELETE CASCADE,
  role            text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
  content         text,
  tool_calls      jsonb,
  tool_call_id    text,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_conversation ON chat_messages (conversation_id, id);
