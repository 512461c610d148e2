// Writes config/sluice-policy.schema.json, the JSON Schema editors check policy files against
// (`npm run schema`). A test fails when the committed file differs from what this writes.
import { writeFileSync } from 'node:fs';
import { SCHEMA_FILE, policyJsonSchemaText } from '../src/policy/json-schema.ts';

const path = new URL(`../${SCHEMA_FILE}`, import.meta.url);
writeFileSync(path, policyJsonSchemaText());
console.log(`wrote ${SCHEMA_FILE}`);
