// Calls every public endpoint of a running app with @gradio/client, as a web page on a Space
// would, and prints one JSON object with what came back (tests/demo/test_api_clients.py reads it).
// Usage: node api_client.mjs <app url> <photo path>
import { readFileSync } from "node:fs";
import { Client, handle_file } from "@gradio/client";

const [url, photo] = process.argv.slice(2);
const app = await Client.connect(url);
const api = await app.view_api();
const image = () => handle_file(new Blob([readFileSync(photo)]));
const out = { endpoints: {} };
for (const [name, ep] of Object.entries(api.named_endpoints)) {
  out.endpoints[name] = {
    parameters: ep.parameters.map((p) => ({ name: p.parameter_name, label: p.label, type: p.python_type.type })),
    returns: ep.returns.map((r) => r.label),
  };
}
out.classify = (await app.predict("/classify", { image: image(), weights: "" })).data;
const cam = (await app.predict("/gradcam", { image: image(), class_name: "", weights: "" })).data;
out.gradcam = { heatmap_url: cam[0]?.url ?? null, score: cam[1] };
const act = (await app.predict("/activations", { image: image(), block: "block13", top_n: 4 })).data;
out.activations = { json: act[0], maps: act[1].map((m) => ({ url: m.image?.url ?? null, caption: m.caption })) };
out.reference = (await app.predict("/architecture", { which: "reference" })).data[0];
out.operation = (await app.predict("/operation", {
  image: image(), block: "block4", layer: "block4_sepconv2", row: 3, col: 4, channel: 5, variant: "paper", top: 3,
})).data[0];
try {
  await app.predict("/gradcam", { image: image(), class_name: "not a class", weights: "" });
  out.bad_class = "no error";
} catch (error) {
  out.bad_class = String(error?.message ?? error);
}
console.log(JSON.stringify(out));
process.exit(0);
