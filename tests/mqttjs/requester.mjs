// An MQTT 5 requester written with MQTT.js, for tests/test_request_response.py.
//
// usage: node requester.mjs URL REQUEST_TOPIC RESPONSE_TOPIC CORRELATION_HEX
// Subscribes to RESPONSE_TOPIC, publishes one request (QoS 1) with ResponseTopic,
// CorrelationData, ContentType and repeated user properties, then prints the first
// reply whose correlation data matches as one JSON line and exits 0. Exits 2 when no
// matching reply comes within 10 s, 1 on a client error.
import mqtt from "mqtt";

const [url, requestTopic, responseTopic, correlationHex] = process.argv.slice(2);
const correlation = Buffer.from(correlationHex, "hex");
const REPLY_TIMEOUT_MS = 10000;
let answered = false;

const client = mqtt.connect(url, {
  protocolVersion: 5,
  clean: true,
  clientId: `mqttjs-requester-${process.pid}`,
  reconnectPeriod: 0,
});

const timer = setTimeout(() => {
  console.error(`no reply with correlation data ${correlationHex} on ${responseTopic}`);
  process.exit(2);
}, REPLY_TIMEOUT_MS);

client.on("error", (error) => {
  if (answered) {
    return; // closing after the answer: the exit below wins
  }
  console.error(`MQTT.js error: ${error.message}`);
  process.exit(1);
});

client.on("connect", () => {
  client.subscribe(responseTopic, { qos: 1 }, (error) => {
    if (error) {
      console.error(`subscribe failed: ${error.message}`);
      process.exit(1);
    }
    client.publish(requestTopic, JSON.stringify({ question: "ping" }), {
      qos: 1,
      properties: {
        responseTopic,
        correlationData: correlation,
        contentType: "application/json",
        userProperties: { tag: ["first", "second"], client: "mqttjs" },
      },
    });
  });
});

client.on("message", (topic, payload, packet) => {
  const properties = packet.properties || {};
  const data = properties.correlationData;
  if (!data || !Buffer.from(data).equals(correlation)) {
    return; // not the answer to our request
  }
  answered = true;
  clearTimeout(timer);
  const line = JSON.stringify({
    topic,
    payload: payload.toString("utf8"),
    correlationData: Buffer.from(data).toString("hex"),
    contentType: properties.contentType ?? null,
    userProperties: properties.userProperties ?? null,
  });
  // Exit only once the line is written: stdout to a pipe is asynchronous in node.
  process.stdout.write(`${line}\n`, () => process.exit(0));
});
