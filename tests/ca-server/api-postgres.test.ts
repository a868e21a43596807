// The API suite against a real PostgreSQL that the test starts and stops.
import { defineApiSuite } from "./api-suite.ts";
import { startPostgres } from "./postgres.ts";

defineApiSuite("PostgreSQL", startPostgres);
