// The push protocol's messages as TypeScript sees them, and the service definition grpc-js
// serves and dials, loaded from src/proto (one .proto is the contract; proto-loader reads it at
// start, so there is no generated code to keep in step).
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

/** Resolved from the repository root, so src/ and dist/ find the same file. */
export const PROTO_PATH = fileURLToPath(new URL('../../src/proto/sluice/control/v1/control.proto', import.meta.url));

export interface Hello {
  readonly sidecarId: string;
  readonly service: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly appliedVersion: string;
  readonly appliedCommit: string;
  readonly sluiceVersion: string;
}

export interface ErrorDetail {
  readonly message: string;
  readonly errors: readonly string[];
}

export interface Ack {
  readonly versionInfo: string;
  readonly responseNonce: string;
  /** Present on a NACK. */
  readonly errorDetail?: ErrorDetail | null;
}

export interface BreakerState {
  readonly upstream: string;
  readonly route: string;
  readonly state: string;
}

export interface CreditState {
  readonly upstream: string;
  readonly granted: number;
  readonly available: number;
  readonly waiting: number;
}

export interface BudgetLevel {
  readonly upstream: string;
  readonly available: number;
}

export interface Health {
  readonly requestsPerSecond: number;
  readonly errorsPerSecond: number;
  readonly refusalsPerSecond: number;
  readonly breakers: readonly BreakerState[];
  readonly credits: readonly CreditState[];
  readonly budgetExhaustedTotal: number;
  readonly state: string;
  readonly budgets: readonly BudgetLevel[];
}

export interface SidecarMessage {
  readonly hello?: Hello;
  readonly ack?: Ack;
  readonly heartbeat?: { readonly health: Health };
}

export interface PolicyUpdate {
  readonly version: string;
  readonly commit: string;
  readonly file: string;
  readonly nonce: string;
  readonly policyYaml: string;
}

export interface ControlMessage {
  readonly update?: PolicyUpdate;
}

export type ControlStream = grpc.ServerDuplexStream<SidecarMessage, ControlMessage>;
export type SidecarStream = grpc.ClientDuplexStream<SidecarMessage, ControlMessage>;

const definition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: false,
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  sluice: { control: { v1: { PolicyDiscovery: grpc.ServiceClientConstructor } } };
};

export const PolicyDiscovery = loaded.sluice.control.v1.PolicyDiscovery;
export const POLICY_DISCOVERY_SERVICE = PolicyDiscovery.service;

/** Metadata key of the bearer token. */
export const AUTH_METADATA = 'authorization';

/**
 * Keepalive on both ends: a connection that died without a FIN (a node gone, a partition) is
 * noticed within about 15 s, and the sidecar reconnects to another replica.
 */
export const KEEPALIVE_OPTIONS: grpc.ChannelOptions = Object.freeze({
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
});

export const SERVER_KEEPALIVE_OPTIONS: grpc.ChannelOptions = {
  ...KEEPALIVE_OPTIONS,
  // Let clients ping as often as they are told to above.
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.http2.max_pings_without_data': 0,
};
