import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { StoredAlert } from '../store/history.js';
import type { ModemView } from '../store/modems.js';
import type { Store } from '../store/store.js';
import { ModemfleetError } from '../util/errors.js';
import {
  CONFIG_ADMIN,
  accessOf,
  describeAccess,
  mayAct,
  sees,
  viewAlerts,
  viewModem,
  viewModems,
  type Access,
} from './access.js';
import { tokenMatches } from './token.js';

/**
 * Who a bearer token is: the configuration's token (admin), or a created token that is not revoked
 * (looked up on every request: a revocation counts from the next one), or nobody (null).
 */
export async function authenticate(
  store: Store,
  adminToken: string,
  token: string | undefined,
): Promise<Access | null> {
  if (token === undefined) return null;
  if (tokenMatches(token, adminToken)) return CONFIG_ADMIN;
  const grant = await store.resolveToken(token);
  return grant ? accessOf(grant) : null;
}

const accessByRequest = new WeakMap<FastifyRequest, Access>();

/** The access of an authenticated request (admin for the public paths, which carry no farm data). */
export function requestAccess(req: FastifyRequest): Access {
  return accessByRequest.get(req) ?? CONFIG_ADMIN;
}

const READS = new Set(['GET', 'HEAD']);

/** Routes a reseller may use besides those of its own modems (`/api/modems/:imei...`). */
const RESELLER_ROUTES = new Set([
  'GET /api/modems',
  'GET /api/whoami',
  'GET /api/alerts',
  'GET /api/commands/:id',
]);

/** Routes that show passwords: never to a read-only token. */
const PASSWORD_ROUTES = new Set(['/api/modems/:imei/credentials', '/api/modems/:imei/logins']);

const forbidden = (message: string): ModemfleetError => new ModemfleetError('forbidden', message);
const hidden = (imei: string): ModemfleetError =>
  new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);

/** What a token may do on a route: 403 for what its scope never allows, 404 for modems it cannot see. */
async function authorize(store: Store, access: Access, req: FastifyRequest): Promise<void> {
  if (access.scope === 'admin') return;
  const route = req.routeOptions.url ?? '';
  if (route === '') return; // no such route: 404
  if (!READS.has(req.method) && !mayAct(access))
    throw forbidden(`the token '${access.name}' is read-only: it cannot ${req.method} ${route}`);
  if (PASSWORD_ROUTES.has(route) && access.scope === 'read-only')
    throw forbidden(`the token '${access.name}' is read-only: it sees no passwords`);
  if (access.scope !== 'reseller') return;
  const { imei } = (req.params ?? {}) as { imei?: string };
  const query = (req.query ?? {}) as { imei?: string };
  if (route.startsWith('/api/modems/:imei')) {
    if (imei === undefined || !sees(access, imei)) throw hidden(imei ?? '');
    return;
  }
  if (!RESELLER_ROUTES.has(`${req.method === 'HEAD' ? 'GET' : req.method} ${route}`))
    throw forbidden(`the token '${access.name}' is a reseller token: ${req.method} ${route} is farm-wide`);
  if (route === '/api/alerts' && query.imei !== undefined && !sees(access, query.imei))
    throw hidden(query.imei);
  if (route === '/api/commands/:id') {
    const { id } = req.params as { id: number };
    const command = await store.command(id);
    if (command && !sees(access, command.imei))
      throw new ModemfleetError('unknown_command', `no command with id ${id}`);
  }
}

/** The answer as the token sees it: other modems filtered out, passwords hidden from read-only. */
function view(access: Access, route: string, payload: unknown): unknown {
  if (access.scope === 'admin') return payload;
  switch (route) {
    case '/api/modems':
      if (Array.isArray(payload)) return viewModems(access, payload as ModemView[]);
      // a page: { modems, next }
      return typeof payload === 'object' && payload !== null && 'modems' in payload
        ? { ...payload, modems: viewModems(access, (payload as { modems: ModemView[] }).modems) }
        : payload;
    case '/api/modems/:imei':
      return typeof payload === 'object' && payload !== null && 'proxy' in payload
        ? viewModem(access, payload as ModemView)
        : payload;
    case '/api/alerts':
      return Array.isArray(payload) ? viewAlerts(access, payload as StoredAlert[]) : payload;
    default:
      return payload;
  }
}

/**
 * Authentication and scopes for everything but `isPublic` paths: 401 without a valid token, 403
 * for what its scope never allows (read-only: any change, passwords; reseller: farm-wide routes),
 * 404 for a modem a reseller does not own; answers are filtered and redacted for the token.
 */
export function registerAuthorization(
  app: FastifyInstance,
  options: {
    store: Store;
    adminToken: string;
    isPublic: (path: string) => boolean;
    bearer: (req: FastifyRequest) => string | undefined;
  },
): void {
  const { store } = options;
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0] ?? '';
    if (options.isPublic(path)) return;
    const access = await authenticate(store, options.adminToken, options.bearer(req));
    if (!access) {
      return reply.code(401).header('www-authenticate', 'Bearer realm="modemfleet"').send({
        error: 'unauthorized',
        message: 'a valid bearer token is required (Authorization: Bearer TOKEN)',
      });
    }
    accessByRequest.set(req, access);
  });
  app.addHook('preHandler', async (req) => {
    const access = accessByRequest.get(req);
    if (access) await authorize(store, access, req);
  });
  app.addHook('preSerialization', async (req, reply, payload) => {
    const access = accessByRequest.get(req);
    if (!access || reply.statusCode >= 400) return payload;
    return view(access, req.routeOptions.url ?? '', payload);
  });
  app.get('/api/whoami', (req) => Promise.resolve(describeAccess(requestAccess(req))));
}
