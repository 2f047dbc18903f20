/** RFC 9457 problem details: every error answer of every HTTP target has this shape. */
import type { FastifyReply } from 'fastify';
import type { FieldIssue } from '../domain/errors.ts';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  errors?: { field: string; message: string }[];
  [ext: string]: unknown;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  426: 'Upgrade Required',
  428: 'Precondition Required',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  499: 'Client Closed Request',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

export function problem(status: number, detail?: string, extra: Partial<Problem> = {}): Problem {
  return {
    type: extra.type ?? 'about:blank',
    title: TITLES[status] ?? 'Error',
    status,
    ...(detail ? { detail } : {}),
    ...extra,
  };
}

export function validationProblem(issues: FieldIssue[], instance?: string, status = 400): Problem {
  const first = issues[0];
  const detail =
    issues.length === 1 && first
      ? `${first.path || 'body'}: ${first.message}`
      : `${issues.length} invalid fields: ${issues.map((i) => i.path || 'body').join(', ')}`;
  return problem(status, detail, {
    type: 'https://taskflow.dev/problems/validation',
    title: 'Invalid request',
    errors: issues.map((i) => ({ field: i.path, message: i.message })),
    ...(instance ? { instance } : {}),
  });
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type('application/problem+json').send(p);
}
