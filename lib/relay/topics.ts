/**
 * A route's caches: one Topic (cache + clients) for a fixed route, one per value for a templated
 * one, made at first use and bounded: past `maxValues` the least recently used value without
 * clients (and not being seeded) is dropped; a message never pushes out a value a client asked for.
 */
import { CloseCode } from "../close_codes.ts";
import type { Broadcaster, ClientSocket } from "./broadcaster.ts";
import { RelayProgress } from "./progress.ts";

/** One cache and its clients: the whole of a fixed route, one value of a templated one. */
export class Topic {
  readonly progress = new RelayProgress();
  /** Pending while the cache is seeded from the stream; undefined once done (or failed). */
  seeding: Promise<void> | undefined;
  constructor(readonly value: string | null, readonly broadcaster: Broadcaster) {}
}

export class Topics {
  /** By value ("" for a fixed route), least recently used first. */
  readonly #topics = new Map<string, Topic>();

  /**
   * `newBroadcaster(joined)`: the broadcaster of a new topic, which calls `joined` at each
   * client's open (see #joined).
   */
  constructor(
    readonly maxValues: number,
    readonly newBroadcaster: (joined: (socket: ClientSocket) => void) => Broadcaster,
  ) {}

  get size(): number {
    return this.#topics.size;
  }

  /** Clients of every cache. */
  get connections(): number {
    let count = 0;
    for (const topic of this.#topics.values()) count += topic.broadcaster.size;
    return count;
  }

  values(): IterableIterator<Topic> {
    return this.#topics.values();
  }

  /** The fixed route's topic, made at once. */
  fixed(): Topic {
    return this.#topics.get("") ?? this.#add(null);
  }

  /**
   * For a client's request: the held topic (now the most recently used), or a new one after
   * making room (`created`: its cache is still to be seeded); undefined when every held value has
   * clients.
   */
  forClient(value: string | null): { topic: Topic; created: boolean } | undefined {
    const key = value ?? "";
    const topic = this.#topics.get(key);
    if (topic !== undefined) {
      this.#topics.delete(key);
      this.#topics.set(key, topic);
      return { topic, created: false };
    }
    return this.#makeRoom() ? { topic: this.#add(value), created: true } : undefined;
  }

  /** For a message: the held topic, or a new one while below the bound. */
  forMessage(value: string): Topic | undefined {
    const topic = this.#topics.get(value);
    if (topic !== undefined) return topic;
    return this.#topics.size < this.maxValues ? this.#add(value) : undefined;
  }

  closeAll(code: number, reason: string): void {
    for (const topic of this.#topics.values()) topic.broadcaster.closeAll(code, reason);
  }

  #add(value: string | null): Topic {
    const topic: Topic = new Topic(
      value,
      this.newBroadcaster((socket) => this.#joined(topic, socket)),
    );
    this.#topics.set(value ?? "", topic);
    return topic;
  }

  /** Below the bound, or the least recently used value without clients was dropped. */
  #makeRoom(): boolean {
    if (this.#topics.size < this.maxValues) return true;
    for (const [key, topic] of this.#topics) {
      if (topic.broadcaster.size === 0 && topic.seeding === undefined) {
        this.#topics.delete(key);
        return true;
      }
    }
    return false;
  }

  /**
   * A client joined `topic` at its open. If the value was dropped between its upgrade and its
   * open (at the bound, by another value), the topic is held again; if the value was meanwhile
   * made anew, the client is told to come back (1013) rather than left on a cache no message
   * reaches.
   */
  #joined(topic: Topic, socket: ClientSocket): void {
    const key = topic.value ?? "";
    const current = this.#topics.get(key);
    if (current === topic) return;
    if (current === undefined) {
      this.#topics.set(key, topic);
      return;
    }
    topic.broadcaster.remove(socket);
    try {
      socket.close(CloseCode.tryAgainLater, "try again");
    } catch {
      // Already closing.
    }
  }
}
