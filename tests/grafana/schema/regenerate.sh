#!/usr/bin/env bash
# Regenerates the JSON schemas in this directory from the Grafana foundation SDK's
# TypeScript types for Grafana 11.6 (npm; the same build as PyPI's
# grafana-foundation-sdk==1769699379!11.6.0). Needs node and npm; the tests only read
# the committed output. Pin exact versions: the SDK's version scheme makes a loose
# range pick a build for another Grafana version.
set -euo pipefail
sdk=@grafana/grafana-foundation-sdk@11.6.0-cogv0.0.x.1769699379
generator=(ts-json-schema-generator@2.10.0 typescript@5.9.3)
# The dashboard model, the Prometheus query, and every panel kind the dashboards use.
modules=(dashboard prometheus stat timeseries table bargauge heatmap statetimeline)

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --silent --no-audit --no-fund "${generator[@]}"
tar xzf "$(npm pack --silent "$sdk")"
for module in "${modules[@]}"; do
    # additionalProperties stays false (the generator's default): a misspelt key fails.
    npx ts-json-schema-generator --no-type-check --type '*' \
        --path "package/dist/$module/types.gen.d.ts" --out "$here/$module.schema.json"
done
