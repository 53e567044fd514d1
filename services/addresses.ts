import { EMAIL_PATTERN } from '../schemas/common.js'

const addrSpec = new RegExp(EMAIL_PATTERN, 'u')

/**
 * One address, one spelling: trimmed, NFKC (so `jose\u0301@` is `josé@` and
 * full-width `ｋａｔｅ@` is `kate@`), lower-cased. What is stored and compared.
 */
export const normalizeEmail = (email: string) => email.trim().normalize('NFKC').toLowerCase()

export const normalizeUsername = (username: string) => username.trim().toLowerCase()

/**
 * True for a plain addr-spec (`local@domain`) once normalized: no display
 * name, angle brackets, commas, semicolons, quotes, spaces or line breaks,
 * which a mailer would read as another recipient. Checked again after NFKC,
 * as a compatibility character may normalize to one of those.
 */
export const isPlainAddress = (email: string) => addrSpec.test(email) && addrSpec.test(normalizeEmail(email))

/** A plain address, normalized; else a 400 VALIDATION_FAILED naming the body field (the schema's pattern checks before NFKC, this after). */
export function addressOf (email: string, field: string): string {
  if (isPlainAddress(email)) return normalizeEmail(email)
  throw Object.assign(new Error(`/body/${field} is not a plain email address`), {
    statusCode: 400,
    validationContext: 'body',
    validation: [{ keyword: 'pattern', instancePath: `/${field}`, schemaPath: '#', params: {}, message: 'is not a plain email address' }]
  })
}
