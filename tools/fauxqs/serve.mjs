// Serves fauxqs's SQS on 127.0.0.1 only: its own command line listens on every interface.
// Usage: node serve.mjs PORT
import { buildApp } from "fauxqs";

const port = Number.parseInt(process.argv[2] ?? "", 10);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node serve.mjs PORT");
  process.exit(2);
}
const app = buildApp({ logger: false });
await app.listen({ port, host: "127.0.0.1" });
console.log(`fauxqs listening on 127.0.0.1:${port}`);
