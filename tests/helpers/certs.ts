/**
 * Test PKI made with openssl at test time in a temp dir: a CA, a server certificate it signed
 * (names chosen per test), a client certificate for mutual TLS, and a second, unrelated CA.
 */

export interface TestCerts extends AsyncDisposable {
  readonly dir: string;
  /** The CA that signed the server and client certificates. */
  readonly caPath: string;
  readonly serverCertPath: string;
  readonly serverKeyPath: string;
  readonly clientCertPath: string;
  readonly clientKeyPath: string;
  /** A CA that signed nothing here: a client trusting only it must refuse the server. */
  readonly otherCaPath: string;
}

export interface CertOptions {
  /** subjectAltName entries of the server certificate. Default `DNS:localhost,IP:127.0.0.1`. */
  readonly serverNames?: readonly string[];
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(stderr)}`);
  }
}

/** A self-signed P-256 CA (`NAME.pem`, `NAME.key`). */
async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    "req",
    ...["-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    ...["-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name}`],
    ...["-addext", "basicConstraints=critical,CA:TRUE"],
    ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
}

/** A leaf (`NAME.pem`, `NAME.key`) signed by `ca`, with the given v3 extensions. */
async function makeLeaf(dir: string, name: string, ca: string, extensions: string) {
  await Deno.writeTextFile(`${dir}/${name}.ext`, extensions);
  await openssl(dir, [
    "req",
    ...["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    ...["-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`],
  ]);
  await openssl(dir, [
    "x509",
    ...["-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`],
    ...["-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`],
  ]);
}

/** Generates the PKI; dispose to delete it. Needs `openssl` on PATH. */
export async function makeCerts(options: CertOptions = {}): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "gateway-certs-" });
  const names = options.serverNames ?? ["DNS:localhost", "IP:127.0.0.1"];
  try {
    await Promise.all([makeCa(dir, "ca"), makeCa(dir, "other-ca")]);
    await makeLeaf(
      dir,
      "server",
      "ca",
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${
        names.join(",")
      }\n`,
    );
    await makeLeaf(
      dir,
      "client",
      "ca",
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  return {
    dir,
    caPath: `${dir}/ca.pem`,
    serverCertPath: `${dir}/server.pem`,
    serverKeyPath: `${dir}/server.key`,
    clientCertPath: `${dir}/client.pem`,
    clientKeyPath: `${dir}/client.key`,
    otherCaPath: `${dir}/other-ca.pem`,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
