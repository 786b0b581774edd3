// Publish a process definition, trigger it, follow its facts until it ends, and print
// the outcome: the Trinity Process Engine driven from TypeScript over gRPC (HTTP/2),
// with code generated from proto/ by protoc-gen-es (src/gen).
//
//   npm ci && npm run build
//   TRINITY_DEFINITION_TARGET=127.0.0.1:7401 TRINITY_EXECUTION_TARGET=127.0.0.1:7402 \
//     node dist/run-process.js [process-name]
//
// Environment: TRINITY_DEFINITION_TARGET, TRINITY_EXECUTION_TARGET (host:port, the same
// variables the services read), TRINITY_TOKEN (bearer token, when the services require
// one), TRINITY_TIMEOUT_MS (default 60000), and the clients' TLS settings the Python
// clients read: TRINITY_TLS_CA_FILE (turns TLS on), TRINITY_TLS_CLIENT_CERT_FILE and
// TRINITY_TLS_CLIENT_KEY_FILE (for servers that require mutual TLS),
// TRINITY_TLS_SERVER_NAME. Progress goes to stderr; the last line on
// stdout is the result as JSON. Exit 0 when the execution completed, 1 otherwise.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";
import { create, createRegistry, equals, toJson, type Registry } from "@bufbuild/protobuf";
import { anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { MoneySchema } from "./gen/trinity/process/common/v1/types_pb.js";
import {
  FailureAction,
  ProcessSpecSchema,
  type ProcessSpec,
} from "./gen/trinity/process/definition/v1/definition_pb.js";
import { DefinitionService } from "./gen/trinity/process/definition/v1/definition_service_pb.js";
import {
  ExecutionStatus,
  StepStatus,
  type Execution,
} from "./gen/trinity/process/execution/v1/execution_pb.js";
import { ExecutionService } from "./gen/trinity/process/execution/v1/execution_service_pb.js";
import {
  file_trinity_process_execution_v1_facts,
  StepCompletedSchema,
} from "./gen/trinity/process/execution/v1/facts_pb.js";

const FINISHED = new Set([
  ExecutionStatus.COMPLETED,
  ExecutionStatus.FAILED,
  ExecutionStatus.CANCELLED,
]);

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** TLS options from the environment, or undefined for cleartext. */
function tlsOptions(): SecureClientSessionOptions | undefined {
  const ca = process.env.TRINITY_TLS_CA_FILE;
  if (!ca) return undefined;
  const options: SecureClientSessionOptions = { ca: readFileSync(ca) };
  const cert = process.env.TRINITY_TLS_CLIENT_CERT_FILE;
  const key = process.env.TRINITY_TLS_CLIENT_KEY_FILE;
  if (cert && key) {
    options.cert = readFileSync(cert);
    options.key = readFileSync(key);
  }
  if (process.env.TRINITY_TLS_SERVER_NAME) options.servername = process.env.TRINITY_TLS_SERVER_NAME;
  return options;
}

function transportFor(target: string, interceptors: Interceptor[]) {
  // gRPC over HTTP/2 to the Python grpc.aio servers: TLS when configured, else cleartext.
  const tls = tlsOptions();
  if (tls === undefined) return createGrpcTransport({ baseUrl: `http://${target}`, interceptors });
  return createGrpcTransport({ baseUrl: `https://${target}`, interceptors, nodeOptions: tls });
}

function bearer(token: string | undefined): Interceptor[] {
  if (!token) return [];
  return [
    (next) => async (request) => {
      request.header.set("authorization", `Bearer ${token}`);
      return next(request);
    },
  ];
}

/** A two-step process: an agent greets, a second agent step repeats it. The service
 *  stores a spec in its canonical form, defaults spelled out (`onFailure: FAIL`), so
 *  this one spells them out too and compares equal to what was published. */
function helloSpec(name: string) {
  return create(ProcessSpecSchema, {
    name,
    description: "Published and run by the TypeScript client",
    labels: { client: "typescript" },
    triggers: [{ kind: { case: "manual", value: {} } }],
    steps: [
      {
        id: "greet",
        name: "Greet",
        kind: {
          case: "agentTask",
          value: { agent: "echo", message: "Hello, {{ input.who }}!" },
        },
        timeout: { seconds: BigInt(60) },
        onFailure: FailureAction.FAIL,
      },
      {
        id: "repeat",
        name: "Repeat the greeting",
        dependsOn: ["greet"],
        kind: {
          case: "agentTask",
          value: { agent: "echo", message: "{{ steps.greet.text }} (via TypeScript)" },
        },
        timeout: { seconds: BigInt(60) },
        onFailure: FailureAction.FAIL,
      },
    ],
  });
}

function describeFact(type: string, fact: Any | undefined, registry: Registry): string {
  if (!fact) return type;
  const message = anyUnpack(fact, registry);
  if (message?.$typeName === StepCompletedSchema.typeName) {
    const completed = anyUnpack(fact, StepCompletedSchema);
    return `${type} ${completed?.stepId}: ${JSON.stringify(completed?.output)}`;
  }
  return type;
}

/** The latest published version of `name` when its spec equals `spec`, else "". */
async function publishedWithSameSpec(
  definitions: Client<typeof DefinitionService>,
  name: string,
  spec: ProcessSpec,
  signal: AbortSignal,
): Promise<string> {
  try {
    const latest = await definitions.getDefinition(
      { selector: { case: "byName", value: { name, version: "" } } },
      { signal },
    );
    const definition = latest.definition;
    return definition?.spec && equals(ProcessSpecSchema, definition.spec, spec)
      ? definition.version
      : "";
  } catch (error) {
    if (ConnectError.from(error).code === Code.NotFound) return ""; // never published
    throw error;
  }
}

async function main(): Promise<number> {
  const processName = process.argv[2] ?? "typescript-hello";
  const definitionTarget = process.env.TRINITY_DEFINITION_TARGET ?? "127.0.0.1:7401";
  const executionTarget = process.env.TRINITY_EXECUTION_TARGET ?? "127.0.0.1:7402";
  const timeoutMs = Number(process.env.TRINITY_TIMEOUT_MS ?? "60000");
  const interceptors = bearer(process.env.TRINITY_TOKEN);
  const definitions = createClient(DefinitionService, transportFor(definitionTarget, interceptors));
  const executions = createClient(ExecutionService, transportFor(executionTarget, interceptors));
  const signal = AbortSignal.timeout(timeoutMs);

  // 1. Publish the spec as the next version of its name, unless the latest published
  //    version already says the same (as `trinity-process definitions apply --publish`).
  const spec = helloSpec(processName);
  let version = await publishedWithSameSpec(definitions, processName, spec, signal);
  if (version) {
    log(`${processName} ${version} is already published with this content`);
  } else {
    const draft = await definitions.createDraft(
      { requestId: randomUUID(), source: { case: "spec", value: spec } },
      { signal },
    );
    const published = await definitions.publishDefinition(
      { requestId: randomUUID(), definitionId: draft.definition?.id ?? "" },
      { signal },
    );
    version = published.definition?.version ?? "";
    log(`published ${processName} ${version}`);
  }

  // Errors arrive as gRPC status codes: an unknown process is NOT_FOUND, not INTERNAL.
  try {
    await executions.triggerProcess(
      { requestId: randomUUID(), processName: `${processName}-does-not-exist` },
      { signal },
    );
    log("triggering an unknown process unexpectedly succeeded");
    return 1;
  } catch (error) {
    const connectError = ConnectError.from(error);
    if (connectError.code !== Code.NotFound) throw error;
    // The details travel as google.rpc.Status details (ErrorInfo with a stable reason).
    const details = connectError.details.map((d) => ("desc" in d ? d.desc.typeName : d.type));
    log(
      `unknown process refused: ${Code[connectError.code]} (${connectError.rawMessage}) ` +
        `details: ${details.join(", ")}; ListDefinitions names the published processes`,
    );
  }

  // 2. Trigger it.
  const triggered = await executions.triggerProcess(
    {
      requestId: randomUUID(),
      processName,
      version,
      input: { who: "TypeScript" },
      // With a token the services record its principal (and refuse a body naming
      // anyone else); without one, say who we are.
      triggeredBy: process.env.TRINITY_TOKEN ? "" : "typescript-client",
    },
    { signal },
  );
  const executionId = triggered.execution?.id ?? "";
  log(`triggered execution ${executionId}`);

  // 3. Follow its facts (a server stream that ends when the execution has ended).
  const registry = createRegistry(file_trinity_process_execution_v1_facts);
  const facts: string[] = [];
  for await (const reply of executions.watchExecution({ executionId }, { signal })) {
    facts.push(reply.type);
    log(`  #${reply.sequence} ${describeFact(reply.type, reply.fact, registry)}`);
  }

  // 4. The final state.
  let execution: Execution | undefined;
  while (!execution || !FINISHED.has(execution.status)) {
    execution = (await executions.getExecution({ executionId }, { signal })).execution;
    if (!execution) throw new Error(`execution ${executionId} not found`);
    if (!FINISHED.has(execution.status)) await new Promise((r) => setTimeout(r, 100));
  }
  const steps = Object.fromEntries(
    execution.steps.map((step) => [
      step.stepId,
      { status: StepStatus[step.status], output: step.output },
    ]),
  );
  const result = {
    executionId,
    processName: execution.processName,
    processVersion: execution.processVersion,
    status: ExecutionStatus[execution.status],
    steps,
    facts,
    totalCost: execution.totalCost ? toJson(MoneySchema, execution.totalCost) : null,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return execution.status === ExecutionStatus.COMPLETED ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    const connectError = error instanceof ConnectError ? error : undefined;
    log(connectError ? `failed: ${Code[connectError.code]}: ${connectError.rawMessage}` : `failed: ${String(error)}`);
    process.exit(1);
  },
);
