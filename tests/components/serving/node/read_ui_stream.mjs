// Reads a Vercel AI SDK UI message stream with the SDK's own client code and prints the
// reconstructed assistant message as JSON.
//
//   node read_ui_stream.mjs FILE        the stream's bytes, saved to a file
//   node read_ui_stream.mjs URL BODY    POST BODY (JSON) to URL, as useChat's transport does
//
// NODE_PATH must reach a node_modules holding the `ai` package.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const { DefaultChatTransport, readUIMessageStream } = require("ai");

const [target, body] = process.argv.slice(2);
const isUrl = /^https?:/.test(target);

// The transport is the one useChat uses; a file is served to it through a fake fetch.
const fetchImpl = isUrl
  ? undefined
  : async () =>
      new Response(readFileSync(target), {
        headers: { "content-type": "text/event-stream", "x-vercel-ai-ui-message-stream": "v1" },
      });

const transport = new DefaultChatTransport({
  api: isUrl ? target : "http://stream.invalid/api/chat",
  fetch: fetchImpl,
  prepareSendMessagesRequest: () => ({ body: body ? JSON.parse(body) : {} }),
});

const errors = [];
const stream = await transport.sendMessages({
  chatId: "chat",
  messages: [],
  abortSignal: undefined,
  trigger: "submit-message",
  messageId: undefined,
});
let last = null;
for await (const message of readUIMessageStream({
  stream,
  onError: (error) => errors.push(String(error)),
  terminateOnError: true,
})) {
  last = message;
}
console.log(JSON.stringify({ message: last, errors }));
