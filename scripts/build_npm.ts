/**
 * Builds the browser client as an npm package in dist/npm/: the same ES module `/client.js`
 * serves (client/gateway_client.ts through Deno's bundler, scripts/build_client.ts), its type
 * declarations (TypeScript's compiler, declarations only), a package.json versioned as the
 * gateway (deno.json "version") with no dependencies, and client/README.md.
 *
 *   deno task build:npm             writes dist/npm/
 *   deno task build:npm --pack      … and runs `npm pack` there: dist/gateway-client-<version>.tgz
 *   … --out=DIR                     writes the package to DIR instead (the tarball beside it)
 */
import { parseArgs } from "node:util";
import ts from "typescript";
import { buildClientJs } from "./build_client.ts";

const ROOT = new URL("../", import.meta.url);
const CLIENT_DIR = new URL("client/", ROOT);
const DEFAULT_OUT = new URL("dist/npm/", ROOT).pathname;

/** The package's name on npm. */
export const PACKAGE_NAME = "@gateway/client";

/** One module: everything the client exports; the payload types are declared beside it. */
const ENTRY = "gateway_client";

/**
 * The .d.ts files of client/gateway_client.ts and what it imports, keyed by file name, with
 * relative `.ts` specifiers turned into `.js` (what a consumer's TypeScript resolves to .d.ts).
 */
export function buildDeclarations(outDir: string): Map<string, string> {
  const entry = new URL(`${ENTRY}.ts`, CLIENT_DIR).pathname;
  const options: ts.CompilerOptions = {
    declaration: true,
    emitDeclarationOnly: true,
    allowImportingTsExtensions: true,
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
    rootDir: CLIENT_DIR.pathname,
    outDir,
    skipLibCheck: true,
  };
  const files = new Map<string, string>();
  const program = ts.createProgram([entry], options);
  const result = program.emit(undefined, (fileName, text) => {
    const name = fileName.slice(fileName.lastIndexOf("/") + 1);
    files.set(name, text.replace(/(from\s+["']\.\/[^"']+)\.ts(["'])/g, "$1.js$2"));
  });
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics];
  if (diagnostics.length > 0 || result.emitSkipped) {
    const host = {
      getCanonicalFileName: (f: string) => f,
      getCurrentDirectory: () => ROOT.pathname,
      getNewLine: () => "\n",
    };
    throw new Error(
      `Cannot emit declarations for ${entry}:\n${ts.formatDiagnostics(diagnostics, host)}`,
    );
  }
  return files;
}

/** package.json: an ES module with its types, no dependencies, the gateway's version. */
export function packageJson(version: string): Record<string, unknown> {
  return {
    name: PACKAGE_NAME,
    version,
    description:
      "Browser client for the gateway's WebSocket routes: reconnects, close codes, token refresh, staleness, ordering.",
    type: "module",
    main: `./${ENTRY}.js`,
    types: `./${ENTRY}.d.ts`,
    exports: {
      ".": { types: `./${ENTRY}.d.ts`, default: `./${ENTRY}.js` },
      "./package.json": "./package.json",
    },
    files: ["*.js", "*.d.ts", "README.md"],
    sideEffects: false,
  };
}

/** Writes the package to `outDir` afresh; returns the version written. */
export async function buildNpmPackage(outDir: string): Promise<string> {
  const { version } = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const js = await buildClientJs();
  const declarations = buildDeclarations(outDir);
  await Deno.remove(outDir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(`${outDir}/${ENTRY}.js`, js);
  for (const [name, text] of declarations) await Deno.writeTextFile(`${outDir}/${name}`, text);
  await Deno.copyFile(new URL("README.md", CLIENT_DIR), `${outDir}/README.md`);
  await Deno.writeTextFile(
    `${outDir}/package.json`,
    JSON.stringify(packageJson(version), null, 2) + "\n",
  );
  return version;
}

/** `npm pack` of `packageDir` into the directory above it; returns the tarball's path. */
export async function packNpmPackage(packageDir: string): Promise<string> {
  const destination = new URL("..", `file://${packageDir.replace(/\/*$/, "/")}`).pathname;
  const { code, stdout, stderr } = await new Deno.Command("npm", {
    args: ["pack", "--json", "--pack-destination", destination],
    cwd: packageDir,
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`npm pack failed:\n${new TextDecoder().decode(stderr)}`);
  const [{ filename }] = JSON.parse(new TextDecoder().decode(stdout));
  return `${destination}${filename}`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { out: { type: "string", default: DEFAULT_OUT }, pack: { type: "boolean" } },
  });
  const outDir = values.out.replace(/\/+$/, "");
  const version = await buildNpmPackage(outDir);
  console.log(`wrote ${outDir}/ (${PACKAGE_NAME}@${version})`);
  if (values.pack) console.log(`packed ${await packNpmPackage(outDir)}`);
}
