import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';

type SerializerFactory = ReturnType<typeof SerializerSelector>;
type RouteDefinition = Parameters<ReturnType<SerializerFactory>>[0];

/**
 * Fastify's response serializers (fast-json-stringify), each compiled when its route first answers
 * with that status rather than all at start-up: compiling the API's few hundred response schemas was
 * half of a prismd start's CPU after its modules loaded (~0.5 s here, a minute on an emulated host,
 * where the event loop stood still the whole time). The serializers are the same as Fastify's own;
 * `compileAll` compiles the ones not compiled yet, so a test still meets a schema that cannot compile.
 */
export class LazySerializers {
  private readonly pending = new Set<() => void>();

  /** For Fastify's `schemaController.compilersFactory.buildSerializer`. */
  readonly factory = (externalSchemas?: unknown, options?: Parameters<SerializerFactory>[1]) => {
    const compile = SerializerSelector()(externalSchemas, options);
    return (route: RouteDefinition) => {
      let serialize: ((doc: unknown) => string) | undefined;
      const ensure = () => {
        this.pending.delete(ensure);
        return (serialize ??= compile(route));
      };
      this.pending.add(ensure);
      return (doc: unknown) => ensure()(doc);
    };
  };

  /** How many serializers are not compiled yet. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Compiles every serializer not compiled yet; throws as Fastify's start-up would have. */
  compileAll(): number {
    const all = [...this.pending];
    for (const ensure of all) ensure();
    return all.length;
  }
}
