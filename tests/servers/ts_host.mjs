// A host on the TypeScript MCP SDK (@modelcontextprotocol/sdk 1.32): its Client over StdioClientTransport,
// with the server command given after `--`. It answers the server's sampling, elicitation and roots
// requests, runs the steps named in argv[2] (comma-separated), and prints one JSON object on stdout:
// {"tools": [...], "<step>": <result text or error>, ...}. Exit status 0 when every step ran.
//
//   node ts_host.mjs tools,sampling,elicitation,roots -- python -m brokerd proxy SERVER
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const dash = process.argv.indexOf("--");
const steps = process.argv[2].split(",");
const [command, ...args] = process.argv.slice(dash + 1);

const client = new Client(
  { name: "ncp-broker-ts-host", version: "0" },
  { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
);
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  role: "assistant",
  content: { type: "text", text: "sampled by the TypeScript host" },
  model: "ts-host",
}));
client.setRequestHandler(ElicitRequestSchema, async () => ({
  action: "accept",
  content: { name: "Ada", check: true, integer: 7, number: 1.5, enum: "right" },
}));
client.setRequestHandler(ListRootsRequestSchema, async () => ({
  roots: [{ uri: "file:///tmp/ts-host-root", name: "ts-host-root" }],
}));

const transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
const out = {};
const text = (result) => result.content.map((c) => c.text ?? "").join("\n");
try {
  await client.connect(transport);
  for (const step of steps) {
    if (step === "tools") out.tools = (await client.listTools()).tools.map((t) => t.name);
    if (step === "sampling")
      out.sampling = text(await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hi" } }));
    if (step === "elicitation")
      out.elicitation = text(await client.callTool({ name: "trigger-elicitation-request", arguments: {} }));
    if (step === "roots") out.roots = text(await client.callTool({ name: "get-roots-list", arguments: {} }));
    if (step === "echo")
      out.echo = text(await client.callTool({ name: "echo", arguments: { message: "from the TypeScript host" } }));
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  await client.close();
  process.exit(0);
} catch (err) {
  process.stdout.write(JSON.stringify({ ...out, error: String(err) }) + "\n");
  process.exit(1);
}
