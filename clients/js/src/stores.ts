import type { Store } from "./types.js";

/** Keeps state for the life of the page/process only (the default). */
export class MemoryStore implements Store {
  private m = new Map<string, string>();
  async get(key: string): Promise<string | null> {
    return this.m.has(key) ? (this.m.get(key) as string) : null;
  }
  async set(key: string, value: string): Promise<void> {
    this.m.set(key, value);
  }
  async delete(key: string): Promise<void> {
    this.m.delete(key);
  }
}

/** The subset of the Web Storage API the store uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Browser `localStorage` (or any Web Storage object passed in). */
export class LocalStorageStore implements Store {
  private s: StorageLike;
  constructor(storage?: StorageLike) {
    const s = storage ?? (globalThis as any).localStorage;
    if (!s) throw new Error("LocalStorageStore: no localStorage here; pass a Storage object");
    this.s = s;
  }
  async get(key: string): Promise<string | null> {
    return this.s.getItem(key);
  }
  async set(key: string, value: string): Promise<void> {
    this.s.setItem(key, value);
  }
  async delete(key: string): Promise<void> {
    this.s.removeItem(key);
  }
}

/** IndexedDB (one object store of strings): survives reloads, usable from a
 * service worker too. `factory` defaults to globalThis.indexedDB. */
export class IndexedDBStore implements Store {
  private db: Promise<IDBDatabase> | null = null;
  constructor(
    private dbName = "switchboard",
    private storeName = "kv",
    private factory?: IDBFactory,
  ) {}

  private open(): Promise<IDBDatabase> {
    if (!this.db) {
      const idb = this.factory ?? (globalThis as any).indexedDB;
      if (!idb) return Promise.reject(new Error("IndexedDBStore: no indexedDB here"));
      this.db = new Promise((resolve, reject) => {
        const req = idb.open(this.dbName, 1);
        req.onupgradeneeded = () => req.result.createObjectStore(this.storeName);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      this.db.catch(() => (this.db = null));
    }
    return this.db;
  }

  private async run<T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest): Promise<T> {
    const db = await this.open();
    return new Promise<T>((resolve, reject) => {
      const tx = db.transaction(this.storeName, mode);
      const req = op(tx.objectStore(this.storeName));
      tx.oncomplete = () => resolve(req.result as T);
      tx.onerror = tx.onabort = () => reject(tx.error ?? req.error);
    });
  }

  async get(key: string): Promise<string | null> {
    const v = await this.run<unknown>("readonly", (s) => s.get(key));
    return typeof v === "string" ? v : null;
  }
  async set(key: string, value: string): Promise<void> {
    await this.run("readwrite", (s) => s.put(value, key));
  }
  async delete(key: string): Promise<void> {
    await this.run("readwrite", (s) => s.delete(key));
  }
}
