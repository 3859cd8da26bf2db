// Reference broadcast server on bun (Bun.serve is built on uWebSockets).
//
// The same protocol as the Python peers (see common.py): a WebSocket to /<channel>
// subscribes to <channel>; a data message from a connection goes to every *other*
// subscriber of its channel (ws.publish skips the sender); POST /publish/<channel>
// sends the body to every subscriber (server.publish), as a text frame when the
// Content-Type is text/* or application/json, else as a binary frame.
// Compression is off, as for the other peers, unless --compression: then permessage-deflate
// with uWebSockets' shared compressor (one zlib stream for every connection), and every
// publish asks for compression. Everything else is bun's default.
//
//   bun bench/peers/bun_server.js --port 8080 [--host 127.0.0.1] [--compression]

function option(name, fallback) {
  const i = Bun.argv.indexOf(name);
  return i >= 0 && i + 1 < Bun.argv.length ? Bun.argv[i + 1] : fallback;
}

const hostname = option("--host", "127.0.0.1");
const compress = Bun.argv.includes("--compression");
const port = Number(option("--port", ""));
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("usage: bun bun_server.js --port PORT [--host ADDR]");
  process.exit(2);
}

function isText(contentType) {
  const ct = (contentType || "").toLowerCase();
  return ct.startsWith("text/") || ct.startsWith("application/json");
}

const server = Bun.serve({
  hostname,
  port,
  async fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (req.method === "POST" && path.startsWith("/publish/")) {
      const channel = path.slice("/publish/".length);
      const body = isText(req.headers.get("content-type"))
        ? await req.text() // a string is sent as a text frame
        : new Uint8Array(await req.arrayBuffer()); // bytes as a binary frame
      server.publish(channel, body, compress);
      return Response.json({ channel, subscribers: server.subscriberCount(channel) });
    }
    if (server.upgrade(req, { data: { channel: path.slice(1) } })) {
      return undefined; // bun has answered 101
    }
    return new Response("expected a WebSocket upgrade\n", { status: 400 });
  },
  websocket: {
    perMessageDeflate: compress ? { compress: "shared", decompress: "shared" } : false,
    open(ws) {
      ws.subscribe(ws.data.channel);
    },
    message(ws, message) {
      ws.publish(ws.data.channel, message, compress); // to every subscriber but ws itself
    },
  },
});

console.log(`READY bun ${server.port}`);
