/** Small helpers for reading fastify requests and streaming files back. */
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errCode } from '../util/fs.js';
import { badRequest } from './errors.js';

export type RouteHandler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** A path parameter ('' when absent; the route table guarantees the ones a handler names). */
export function pathParam(request: FastifyRequest, name: string): string {
  const value = (request.params as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : '';
}

/** A query parameter given at most once; `?a=1&a=2` is a 400, not a silent pick. */
export function queryParam(request: FastifyRequest, name: string): string | undefined {
  const value = (request.query as Record<string, unknown> | undefined)?.[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`${name} must be given at most once`);
  return value;
}


/**
 * Open a regular file for streaming; null if it is missing (e.g. deleted a moment ago) or
 * not a regular file. The size comes from the open handle, so Content-Length matches the
 * bytes streamed even if the path is replaced meanwhile.
 */
export async function openRegularFile(path: string): Promise<{ stream: Readable; size: number } | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    const code = errCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return null;
    throw err;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      await handle.close();
      return null;
    }
    // autoClose (the default): the handle is closed when the stream ends or is destroyed.
    return { stream: handle.createReadStream(), size: stat.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Send an opened file with an exact Content-Length. */
export function sendFile(reply: FastifyReply, file: { stream: Readable; size: number }, contentType: string): FastifyReply {
  return reply.header('content-type', contentType).header('content-length', String(file.size)).send(file.stream);
}
