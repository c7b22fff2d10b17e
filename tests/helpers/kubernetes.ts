/**
 * Reads the shipped Kubernetes manifests (deploy/kubernetes/*.yaml) as plain objects, and finds
 * what the tests check in them: the gateway container, its environment, probes and ports.
 */
import { parse, parseAllDocuments } from "yaml";

const DIR = new URL("../../deploy/kubernetes/", import.meta.url);

// Only the fields the tests read; everything else stays `unknown`.
export interface Probe {
  readonly httpGet?: { readonly path: string; readonly port: string | number };
  readonly periodSeconds?: number;
  readonly failureThreshold?: number;
}

export interface Container {
  readonly name: string;
  readonly ports: readonly { readonly name: string; readonly containerPort: number }[];
  readonly env?: readonly { readonly name: string }[];
  readonly envFrom?: readonly {
    readonly configMapRef?: { readonly name: string };
    readonly secretRef?: { readonly name: string };
  }[];
  readonly livenessProbe?: Probe;
  readonly readinessProbe?: Probe;
  readonly startupProbe?: Probe;
  readonly lifecycle?: { readonly preStop?: { readonly sleep?: { readonly seconds: number } } };
  readonly resources?: {
    readonly requests?: Record<string, string>;
    readonly limits?: Record<string, string>;
  };
  readonly securityContext?: Record<string, unknown>;
}

export interface Manifest {
  readonly file: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly labels?: Record<string, string> };
  // deno-lint-ignore no-explicit-any
  readonly spec?: any;
  readonly data?: Record<string, string>;
  readonly stringData?: Record<string, string>;
}

/** Every document of every .yaml file in deploy/kubernetes/ except kustomization.yaml. */
export async function readManifests(): Promise<Manifest[]> {
  const manifests: Manifest[] = [];
  const files = [];
  for await (const entry of Deno.readDir(DIR)) {
    if (entry.isFile && entry.name.endsWith(".yaml")) files.push(entry.name);
  }
  for (const file of files.sort()) {
    if (file === "kustomization.yaml") continue;
    for (const document of parseAllDocuments(await Deno.readTextFile(new URL(file, DIR)))) {
      if (document.errors.length > 0) throw new Error(`${file}: ${document.errors[0].message}`);
      const value = document.toJS();
      if (value !== null) manifests.push({ file, ...value });
    }
  }
  return manifests;
}

/** The kustomization's resource list. */
export async function kustomizationResources(): Promise<string[]> {
  return parse(await Deno.readTextFile(new URL("kustomization.yaml", DIR))).resources;
}

/** The one manifest of `kind` (throws when there are none or several). */
export function only(manifests: readonly Manifest[], kind: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0];
}

/** The Deployment's container named "gateway". */
export function gatewayContainer(deployment: Manifest): Container {
  const containers: Container[] = deployment.spec.template.spec.containers;
  const container = containers.find((c) => c.name === "gateway");
  if (!container) throw new Error(`${deployment.file}: no container named "gateway"`);
  return container;
}

/** A probe's or Service's port: a number, or the name of one of the container's ports. */
export function resolvePort(container: Container, port: string | number): number {
  if (typeof port === "number") return port;
  const named = container.ports.find((p) => p.name === port);
  if (!named) throw new Error(`container "${container.name}" has no port named "${port}"`);
  return named.containerPort;
}

/**
 * The environment the container gets: its ConfigMaps' data, then its Secrets' (base64 `data` or
 * `stringData`), then its own `env` entries (names only: values may come from elsewhere).
 */
export function containerEnvironment(
  manifests: readonly Manifest[],
  container: Container,
): { readonly values: Record<string, string>; readonly names: readonly string[] } {
  const values: Record<string, string> = {};
  const byName = (kind: string, name: string) => {
    const found = manifests.find((m) => m.kind === kind && m.metadata.name === name);
    if (!found) throw new Error(`the container refers to ${kind} "${name}", which is not shipped`);
    return found;
  };
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) {
      Object.assign(values, byName("ConfigMap", source.configMapRef.name).data);
    }
    if (source.secretRef) {
      const secret = byName("Secret", source.secretRef.name);
      for (const [name, encoded] of Object.entries(secret.data ?? {})) values[name] = atob(encoded);
      Object.assign(values, secret.stringData);
    }
  }
  const names = [...Object.keys(values), ...(container.env ?? []).map((e) => e.name)];
  return { values, names };
}
