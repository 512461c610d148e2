import type { AddressInfo, Server } from 'node:net';
import type { ListenerAddress } from '../policy/types.ts';

/** Binds a server, rejecting with the bind error (port in use, bad address) instead of throwing later. */
export function listen(server: Server, addr: ListenerAddress): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
