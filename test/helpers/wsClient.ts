import WebSocket from 'ws';
import { TOKEN, until } from './farm.js';

export interface Message {
  type: string;
  [key: string]: unknown;
}

/** A WebSocket client that records everything it receives. */
export class WsClient {
  readonly messages: Message[] = [];
  readonly ws: WebSocket;
  closed: { code: number } | undefined;

  constructor(
    url: string,
    headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` },
    query = '',
  ) {
    this.ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws${query}`, { headers });
    this.ws.on('message', (data: Buffer) => this.messages.push(JSON.parse(data.toString()) as Message));
    this.ws.on('close', (code) => {
      this.closed = { code };
    });
    this.ws.on('error', () => undefined);
  }

  async next(match: (m: Message) => boolean, from = 0, ms = 10_000): Promise<Message> {
    let found: Message | undefined;
    await until(
      () => {
        found = this.messages.slice(from).find(match);
        return found !== undefined;
      },
      ms,
      'a websocket message',
    );
    return found as Message;
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  close(): void {
    this.ws.terminate();
  }
}
