// The Status objects the Kubernetes API server answers failures with, and the error that
// carries one through the test server's handlers.

export interface StatusBody {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, never>;
  status: "Failure" | "Success";
  message: string;
  reason: string;
  details?: Record<string, unknown>;
  code: number;
}

/** A failure the test server answers with a real Status object. */
export class ApiFailure extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }

  body(): StatusBody {
    return {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

export const notFound = (plural: string, name: string, group = "") =>
  new ApiFailure(404, "NotFound", `${plural}${group ? `.${group}` : ""} "${name}" not found`, {
    name,
    ...(group ? { group } : {}),
    kind: plural,
  });

export const alreadyExists = (plural: string, name: string, group = "") =>
  new ApiFailure(409, "AlreadyExists", `${plural}${group ? `.${group}` : ""} "${name}" already exists`, {
    name,
    ...(group ? { group } : {}),
    kind: plural,
  });

export const conflict = (plural: string, name: string, group = "") =>
  new ApiFailure(
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${plural}${group ? `.${group}` : ""} "${name}": ` +
      "the object has been modified; please apply your changes to the latest version and try again",
    { name, ...(group ? { group } : {}), kind: plural },
  );

export const expired = (message: string) => new ApiFailure(410, "Expired", message);

export const badRequest = (message: string) => new ApiFailure(400, "BadRequest", message);

export const unauthorized = () => new ApiFailure(401, "Unauthorized", "Unauthorized");

/** 422, as validation answers: `<Kind>.<group> "<name>" is invalid: <field>: <what>`. */
export function invalid(
  kind: string,
  group: string,
  name: string,
  causes: Array<{ field: string; message: string }>,
): ApiFailure {
  const qualified = group ? `${kind}.${group}` : kind;
  return new ApiFailure(
    422,
    "Invalid",
    `${qualified} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(", ")}`,
    {
      name,
      ...(group ? { group } : {}),
      kind,
      causes: causes.map((c) => ({ reason: "FieldValueInvalid", message: c.message, field: c.field })),
    },
  );
}

/** 403 in the API server's words. */
export function forbidden(
  user: string,
  verb: string,
  plural: string,
  group: string,
  namespace: string | undefined,
  name?: string,
): ApiFailure {
  const resource = name
    ? `${plural} "${name}" is forbidden`
    : `${plural}${group ? `.${group}` : ""} is forbidden`;
  const where = namespace ? `in the namespace "${namespace}"` : "at the cluster scope";
  return new ApiFailure(
    403,
    "Forbidden",
    `${resource}: User "${user}" cannot ${verb} resource "${plural}" in API group "${group}" ${where}`,
    { ...(name ? { name } : {}), ...(group ? { group } : {}), kind: plural },
  );
}
