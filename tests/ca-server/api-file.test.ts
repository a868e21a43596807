// The API suite against the embedded file store.
import { defineApiSuite } from "./api-suite.ts";

defineApiSuite(
  "embedded file store",
  () => Promise.resolve({ url: undefined, stop: () => Promise.resolve() }),
);
